"""Leaf I/O and provenance: atomic writes (files and model folders), `versions()` and `git_hash()`.

Everything written to a run folder or the shared cache ($BENCH_CACHE) goes through here, so a reader or a kill
never sees a half-written file or folder. The pattern is always the same: write a sibling temporary (named with
the process id, so two processes sharing the cache never collide), then `os.replace` it into place.

This module imports only the standard library (plus torch/transformers objects passed in by the caller), so every
layer (harness, methods, evaluators, leaderboards) may import it without creating an import circle.

    from harness.io import write_json, read_json, atomic_path, save_model_atomic

    write_json(run_dir / "results.json", record)          # atomic JSON
    with atomic_path(cache / "ref.pt") as tmp:             # any writer: torch.save, np.save, ...
        torch.save(tensors, tmp)
    save_model_atomic(model, tokenizer, out_dir, record)   # a whole model folder (+ train_record.json)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "MANIFEST", "checked_folder", "discard_damaged", "folder_problem", "init_sqlite_cache", "read_cache_json", "sha256_file",
    "write_cache_json", "write_manifest",
    "TRAIN_RECORD", "atomic_dir", "atomic_path", "copy_dir_atomic", "git_hash", "read_json", "save_model_atomic",
    "versions", "write_json", "write_text",
]

log = logging.getLogger("bench")
TRAIN_RECORD = "bench_train.json"  # what produced a saved model folder, written inside it (nanoGPT's checkpoint args)
PROVENANCE_PACKAGES = ("safealign-bench", "torch", "transformers", "trl", "datasets", "accelerate", "peft", "vllm")


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write a file to; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(path: str | Path, text: str) -> None:
    """Atomic: a reader (or a kill) never sees a half-written file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    """Atomic JSON (non-JSON values such as paths are written with `str`)."""
    write_text(path, json.dumps(obj, indent=indent, default=str))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield an empty temporary sibling folder; on success it becomes `out_dir` (an existing one is replaced when
    `overwrite`, else kept and the new copy dropped: first writer wins, for shared caches). On error it is removed."""
    out_dir = Path(out_dir)
    tmp = _tmp_sibling(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out_dir.exists():
            if not overwrite:
                return
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def save_model_atomic(model: Any, tokenizer: Any, out_dir: str | Path, record: dict[str, Any] | None = None,
                      record_name: str = TRAIN_RECORD, overwrite: bool = True) -> Path:
    """`save_pretrained` the model and tokenizer (and `record` as JSON) into `out_dir`, atomically: a killed run
    never leaves a half-saved model."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        if int(os.environ.get("RANK", "0")) != 0 and not any(tmp.glob("*.safetensors")):
            _save_weights_on_any_rank(model, tmp)
        tokenizer.save_pretrained(tmp)
        if record is not None:
            (tmp / record_name).write_text(json.dumps(record, indent=2, default=str))
    return out_dir


def _save_weights_on_any_rank(model: Any, folder: Path) -> None:
    """A non-zero rank of a data-parallel run: transformers writes weights on rank 0 only, but that rank's method
    code reads its own copy back (its scratch tree, `harness.runs._follow_training`); the weights equal rank 0's
    after DDP's all-reduce. Every name is kept (tied embeddings too), each tensor its own copy (safetensors refuses
    shared storage)."""
    from safetensors.torch import save_file

    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})


def copy_dir_atomic(src: str | Path, dst: str | Path) -> Path:
    """Copy a folder (e.g. a saved model) so that `dst` appears complete or not at all."""
    dst = Path(dst)
    with atomic_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
    return dst


# -- provenance -----------------------------------------------------------------------------------------------------

def git_hash() -> str | None:
    """The commit of the checkout this code runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    """Python and the installed versions of the packages that can change a number (lm-eval's `versions`)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in PROVENANCE_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


# -- cache integrity ---------------------------------------------------------------------------------------------------
# Every cache entry carries its key and a checksum. A reader that finds an entry damaged (unparsable, truncated, written
# for another key, checksum mismatch) logs one warning, deletes it and rebuilds it: a bad entry is never used, and
# never breaks later runs.

MANIFEST = "bench_manifest.json"  # inside a cached model/scorer folder: every file's size and sha256
MUTABLE_METADATA = ("card.json", "bench_train.json", "bench_model.json")  # may gain fields after the build: parse-checked only
_HASHED: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, memoised per process by (path, size, mtime): a big model is hashed once per process."""
    path = Path(path)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _HASHED:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _HASHED[key] = h.hexdigest()
    return _HASHED[key]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and ".tmp" not in p.name)


def write_manifest(folder: str | Path) -> None:
    folder = Path(folder)
    files = {str(p.relative_to(folder)): ({"json": True} if p.name in MUTABLE_METADATA else {"size": p.stat().st_size, "sha256": sha256_file(p)})
             for p in _files(folder)}
    write_json(folder / MANIFEST, {"files": files})


def _structure_problem(folder: Path) -> str | None:
    """For a folder without a manifest (written before manifests existed): every JSON parses and every safetensors
    file is as long as its header says."""
    files = _files(folder)
    if not files:
        return "empty folder"
    for p in files:
        try:
            if p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".safetensors":
                with open(p, "rb") as fh:
                    n = int.from_bytes(fh.read(8), "little")
                    header = json.loads(fh.read(n))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
                if p.stat().st_size != 8 + n + end:
                    return f"{p.name} is {p.stat().st_size} bytes, its header says {8 + n + end}"
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{p.name} unreadable ({type(exc).__name__}: {str(exc)[:80]})"
    return None


def folder_problem(folder: str | Path, adopt: bool = True) -> str | None:
    """Why a cached folder (model, scorer) must not be used, or None when intact. A folder without a manifest that
    passes the structural check is adopted (`adopt`: its manifest is written now; never for a user's own folder)."""
    folder = Path(folder)
    manifest = folder / MANIFEST
    if not manifest.exists():
        problem = _structure_problem(folder)
        if problem is None and adopt:
            with contextlib.suppress(OSError):
                write_manifest(folder)
        return problem
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable {MANIFEST} ({exc})"
    for rel, meta in files.items():
        p = folder / rel
        if not p.is_file():
            return f"{rel} is missing"
        if meta.get("json"):
            try:
                json.loads(p.read_text())
            except (OSError, ValueError) as exc:
                return f"{rel} unreadable ({exc})"
        elif p.stat().st_size != meta["size"]:
            return f"{rel} is {p.stat().st_size} bytes, {meta['size']} expected (truncated?)"
        elif sha256_file(p) != meta["sha256"]:
            return f"{rel} checksum mismatch (damaged)"
    return None


def discard_damaged(path: str | Path, problem: str, what: str = "cache entry") -> None:
    """Log one warning and remove a damaged cache entry (file or folder) so it is rebuilt."""
    path = Path(path)
    log.warning("discarding damaged %s %s (%s); rebuilding it", what, path, problem)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def checked_folder(path: str | Path, what: str = "cache entry") -> bool:
    """True if the cached folder exists and is intact; a damaged one is discarded (one warning) and False returned."""
    path = Path(path)
    if not path.exists():
        return False
    problem = folder_problem(path)
    if problem is None:
        return True
    discard_damaged(path, problem, what)
    return False


def write_cache_json(path: str | Path, key: str, payload: Any) -> None:
    """A JSON cache entry that carries its key and the sha256 of its payload; written atomically."""
    body = json.dumps(payload, sort_keys=True, default=str)
    write_text(path, json.dumps({"key": key, "sha256": hashlib.sha256(body.encode()).hexdigest(), "payload": payload}, default=str))


def read_cache_json(path: str | Path, key: str) -> Any | None:
    """The payload of an intact entry written for `key`; None when absent. A damaged entry (unparsable, truncated,
    another key, checksum mismatch) is discarded with one warning and None returned, so the caller rebuilds it."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        entry = json.loads(path.read_text())
        payload = entry["payload"]
        body = json.dumps(payload, sort_keys=True, default=str)
        if entry["key"] != key:
            raise ValueError(f"written for key {str(entry['key'])[:16]}…, not {key[:16]}…")
        if hashlib.sha256(body.encode()).hexdigest() != entry["sha256"]:
            raise ValueError("checksum mismatch")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        discard_damaged(path, f"{type(exc).__name__}: {str(exc)[:100]}")
        return None
    return payload


def init_sqlite_cache(path: str | Path, ddl: str, timeout: float = 60) -> None:
    """Create a SQLite cache's table; a damaged file is moved aside (`<name>.damaged-<time>-<pid>`, one warning) and
    started afresh, never read. Every row of these caches is keyed, so a fresh file only costs recomputation."""
    import sqlite3
    import time

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def create() -> None:
        with contextlib.closing(sqlite3.connect(path, timeout=timeout)) as db, db:
            db.execute(ddl)
            table = ddl.split("EXISTS", 1)[-1].split("(", 1)[0].strip()
            db.execute(f"SELECT count(*) FROM {table} WHERE rowid < 0").fetchone()  # a damaged file fails here

    try:
        create()
    except sqlite3.DatabaseError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise
        damaged = path.with_name(f"{path.name}.damaged-{int(time.time())}-{os.getpid()}")
        log.warning("cache %s is damaged (%s); moved to %s and rebuilt", path, exc, damaged.name)
        os.replace(path, damaged)
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        create()
