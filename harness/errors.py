"""User-facing errors. The CLI turns a `BenchError` into one line on stderr and exit code 2."""

from __future__ import annotations


class BenchError(Exception):
    """Bad input from the user (config, data, method name, model): one line naming the problem and the fix."""


class DataError(BenchError):
    """A dataset file, row or field is malformed."""

    def __init__(self, problem: str, *, file: str | None = None, row: int | None = None, field: str | None = None, fix: str = ""):
        where = ", ".join(p for p in (file and f"file {file}", row is not None and f"row {row}", field and f"field '{field}'") if p)
        msg = f"{where}: {problem}" if where else problem
        if fix:
            msg += f" ({fix})"
        super().__init__(msg)
        self.file, self.row, self.field = file, row, field
