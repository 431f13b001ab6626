"""Shared helpers for dataset adapters: stable prompt-hash folds, local file reading, row validation."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterator

from harness.errors import BenchError, DataError
from harness.types import PreferencePair

# Fold = bucket of a stable hash of the normalised prompt, so no prompt lands in two folds, for every seed
# and method [ours]. Boundaries are cumulative percentages.
FOLDS = ("train", "scorer", "dual", "eval")
FOLD_BOUNDS = {"train": 60, "scorer": 80, "dual": 88, "eval": 100}


def normalize_prompt(prompt: str) -> str:
    return re.sub(r"\s+", " ", prompt).strip().lower()


def prompt_bucket(prompt: str) -> int:
    return int(hashlib.sha1(normalize_prompt(prompt).encode()).hexdigest(), 16) % 100


def fold_of(prompt: str, bounds: dict[str, int] = FOLD_BOUNDS) -> str:
    b = prompt_bucket(prompt)
    for fold, upper in bounds.items():
        if b < upper:
            return fold
    return list(bounds)[-1]


def split_hash(items: list[str]) -> str:
    """Hash of a set of prompts (recorded with results and score-model cards)."""
    return hashlib.sha256("\n".join(sorted({normalize_prompt(p) for p in items})).encode()).hexdigest()[:12]


def resolve_local(data_dir: str | None, *candidates: str) -> Path | None:
    """The dataset's folder inside `data_dir` (or `data_dir` itself if it holds the files)."""
    if not data_dir:
        return None
    root = Path(data_dir).expanduser()
    if not root.exists():
        raise BenchError(f"data dir {root} does not exist: fix --data-dir / BENCH_DATA_DIR")
    for c in candidates:
        if (root / c).exists():
            return root / c
    return root


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row index, record) from .jsonl / .json (a list) / .jsonl.gz / .parquet, with file/row errors."""
    name = path.name
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        for i, rec in enumerate(pq.read_table(path).to_pylist()):
            yield i, rec
        return
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8-sig") as fh:
        if ".jsonl" in name:
            for i, line in enumerate(fh):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"invalid JSON ({exc.msg})", file=str(path), row=i, fix="fix or remove the line") from exc
                if not isinstance(rec, dict):
                    raise DataError("expected a JSON object", file=str(path), row=i)
                yield i, rec
        else:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON ({exc.msg} at line {exc.lineno})", file=str(path), fix="fix the file") from exc
            if not isinstance(data, list):
                raise DataError("expected a JSON list of objects", file=str(path))
            for i, rec in enumerate(data):
                if not isinstance(rec, dict):
                    raise DataError("expected a JSON object", file=str(path), row=i)
                yield i, rec


def need(rec: dict[str, Any], field: str, types: type | tuple[type, ...], path: Path, row: int) -> Any:
    if field not in rec:
        raise DataError("missing column", file=str(path), row=row, field=field, fix="every row needs it for this schema")
    value = rec[field]
    if isinstance(types, tuple) and int in types and isinstance(value, bool) and bool not in types:
        raise DataError(f"expected {'/'.join(t.__name__ for t in types)}, got {value!r}", file=str(path), row=row, field=field)
    if not isinstance(value, types):
        want = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise DataError(f"expected {want}, got {type(value).__name__} {str(value)[:40]!r}", file=str(path), row=row, field=field)
    return value


def dedupe(pairs: list[PreferencePair]) -> tuple[list[PreferencePair], int]:
    seen, out = set(), []
    for p in pairs:
        key = (normalize_prompt(p.prompt), p.chosen.strip(), p.rejected.strip())
        if key in seen:
            continue
        seen.add(key)
        out.append(p)
    return out, len(pairs) - len(out)


def split_pairs(pairs: list[PreferencePair], bounds: dict[str, int] = FOLD_BOUNDS) -> dict[str, list[PreferencePair]]:
    folds: dict[str, list[PreferencePair]] = {f: [] for f in bounds}
    for p in pairs:
        folds[fold_of(p.prompt, bounds)].append(p)
    return folds


def cap(items: list, n: int) -> list:
    """Deterministic cap: a seed-independent subset (order by hash), so every method sees the same pairs."""
    if not n or len(items) <= n:
        return items
    keyed = sorted(items, key=lambda p: hashlib.sha1((getattr(p, "prompt", "") + getattr(p, "chosen", "")).encode()).hexdigest())
    return keyed[:n]
