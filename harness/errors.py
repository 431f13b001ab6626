"""User-facing errors. The CLI turns a `BenchError` into one line on stderr and exit code 2."""

from __future__ import annotations


class BenchError(Exception):
    """Bad input from the user (config, data, method name, model): one line naming the problem and the fix."""


class ConfigValueError(BenchError):
    """A config dataclass's `__post_init__` refusing a value; `build_dataclass` adds the section prefix to `field`."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"config key '{field}': {problem}")
        self.field, self.problem = field, problem


class DataError(BenchError):
    """A dataset file, row or field is malformed."""

    def __init__(self, problem: str, *, file: str | None = None, row: int | None = None, field: str | None = None, fix: str = ""):
        where = ", ".join(p for p in (file and f"file {file}", row is not None and f"row {row}", field and f"field '{field}'") if p)
        msg = f"{where}: {problem}" if where else problem
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)
        self.file, self.row, self.field = file, row, field


def os_error_message(exc: OSError) -> str | None:
    """One line for the OS errors a user can fix (full disk, read-only or forbidden path); None for the others."""
    import errno

    where = exc.filename or "a file"
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
        return f"disk full while writing {where}: free space, or point --runs-dir / $BENCH_CACHE at another disk (finished stages are kept)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {where} ({exc.strerror}): make it writable or choose another --runs-dir / $BENCH_CACHE"
    return None


def check_folder(path: object, option: str, *, must_exist: bool = False, hint: str = "") -> None:
    """A folder option (`--runs-dir`, `--data-dir`, `--plots-dir`) checked before any work: a BenchError line when the
    path, or a folder above it, is a regular file, or (`must_exist`) when there is no folder at the path. `hint` ends
    the missing-folder line (what usually belongs there)."""
    from pathlib import Path

    target = Path(str(path))
    for part in (target, *target.parents):
        try:
            if not part.exists():
                continue
            if part.is_dir():
                break
        except OSError:  # an unreadable parent: the command's own write or read reports it
            break
        where = "is a file" if part == target else f"is inside {part}, which is a file"
        raise BenchError(f"{option} {target} {where}, not a folder: point {option} at a folder")
    if must_exist and not target.is_dir():
        raise BenchError(f"{option} {target} does not exist{': ' + hint if hint else ''}")


class RunFailed(Exception):
    """A stage of a run failed inside a component (a method, scorer or generator; a plugin's bug, or its `sys.exit`).
    The CLI prints the message as one line and exits 1; the run is marked failed in the store, its finished stages
    are kept, and the traceback is in `log_path` (`bench --debug` also prints it, from `details`)."""

    def __init__(self, message: str, *, log_path: str | None = None, details: str = ""):
        super().__init__(message)
        self.log_path, self.details = log_path, details
