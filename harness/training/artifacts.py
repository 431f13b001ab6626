"""Content-addressed store of finished trainings: the same training is never run twice.

A training is named by a key over everything that decides its result (initial weights' fingerprint, the exact
pairs, the loss incl. margins, beta, the training regime and the seed; never the run or method name). The first
run that needs it trains and *publishes* the folder to `cache_dir()/trained/<kind>/<key>/`; every later request,
from any method or run, *materialises* it into its own folder instead of training:

    hit = lookup("dpo", key)                     # a verified entry, or None (a corrupt one is discarded)
    if hit: materialise(hit, out_dir)            # hard links (copies across file systems), atomically
    else: ...train into out_dir...; publish("dpo", key, out_dir, record)

Rules shared with the other caches: writes are atomic (temp sibling, then rename), an entry carries its key and a
manifest of its files (name -> size) that `lookup` checks, and an entry that fails the check is removed and
retrained rather than read. Weights are hard-linked, never written in place (every writer here creates new files),
so a run folder and the store share disk space; small JSON files are copied.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from harness.io import atomic_dir, write_json

log = logging.getLogger("bench")
ENTRY_RECORD = "bench_store.json"
_LINKED = (".safetensors", ".bin", ".pt", ".model")  # large, write-once files: hard-linked; the rest is copied


def store_root(kind: str) -> Path:
    """`$BENCH_STORE/<kind>` if set (tests isolate it per test), else `cache_dir()/trained/<kind>`."""
    from harness.models import cache_dir

    root = os.environ.get("BENCH_STORE")
    return (Path(root) if root else cache_dir() / "trained") / kind


def entry_path(kind: str, key: str) -> Path:
    return store_root(kind) / key


def _manifest(folder: Path) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in sorted(folder.iterdir()) if f.is_file() and f.name != ENTRY_RECORD}


def read_entry(path: Path) -> dict[str, Any]:
    return json.loads((path / ENTRY_RECORD).read_text())


def lookup(kind: str, key: str) -> Path | None:
    """The store folder for `key` if it exists and passes the key and manifest check; a failing entry (half
    copied by hand, truncated file, another key) is discarded so the caller retrains."""
    path = entry_path(kind, key)
    if not path.is_dir():
        return None
    try:
        entry = read_entry(path)
        ok = entry.get("key") == key and _manifest(path) == entry.get("files")
    except (OSError, ValueError):
        ok = False
    if ok:
        return path
    log.warning("discarding corrupt %s store entry %s (key or file sizes do not match its record)", kind, path)
    _discard(path)
    return None


def _discard(path: Path) -> None:
    trash = path.with_name(f".{path.name}.trash{os.getpid()}")
    try:
        os.replace(path, trash)  # atomic: a concurrent reader sees the entry or nothing
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _link_or_copy(src: Path, dst: Path) -> str:
    if src.suffix in _LINKED:
        try:
            os.link(src, dst)
            return "hardlink"
        except OSError:  # another file system, or links not allowed
            pass
    shutil.copy2(src, dst)
    return "copy"


def _fill(src: Path, tmp: Path) -> str:
    modes = {_link_or_copy(f, tmp / f.name) for f in sorted(src.iterdir()) if f.is_file() and f.name != ENTRY_RECORD}
    return "hardlink" if modes == {"hardlink"} else ("copy" if modes == {"copy"} else "hardlink+copy")


def materialise(src: Path, dst: Path) -> str:
    """Put the files of store entry `src` at `dst` (replacing it) atomically; returns how: hardlink/copy."""
    with atomic_dir(dst) as tmp:
        how = _fill(Path(src), tmp)
    return how


def publish(kind: str, key: str, folder: Path, record: dict[str, Any]) -> Path:
    """Add the finished `folder` to the store under `key` (first writer wins: a no-op when another run published
    it first)."""
    path = entry_path(kind, key)
    if lookup(kind, key) is not None:
        return path
    with atomic_dir(path, overwrite=False) as tmp:
        _fill(Path(folder), tmp)
        write_json(tmp / ENTRY_RECORD, {"key": key, "kind": kind, "files": _manifest(tmp), **record})
    return path
