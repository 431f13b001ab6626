"""Shared helpers for dataset adapters: stable prompt-hash folds, local file reading, row validation."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import zlib
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


# Characters that show nothing on their own: fillers that render blank and the variation selectors. Together with the
# control (Cc), format (Cf: zero-width, bidi, tags) and unassigned categories they count as nothing in `visible_text`.
_INVISIBLE = {0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x2800, 0x3164, 0xFFA0, *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)}


def visible_text(text: str) -> str:
    """`text` without control, zero-width, bidi and other invisible characters, whitespace collapsed: what a reader
    sees. A prompt whose visible text is empty holds nothing to answer (`need_text`, `check_visible`)."""
    import unicodedata

    kept = "".join(" " if unicodedata.category(c).startswith("Z") else c for c in text
                   if ord(c) not in _INVISIBLE and unicodedata.category(c) not in ("Cc", "Cf", "Cn", "Cs") or c in "\t\n\r")
    return re.sub(r"\s+", " ", kept).strip()


def check_visible(value: str, path: Path | str, row: int | None, field: str) -> str:
    """`value`, or a DataError naming file, row and field when it shows nothing (empty, whitespace, or only control,
    zero-width and bidi characters)."""
    if not visible_text(value):
        problem = ("empty or whitespace-only text" if not value.strip()
                   else "nothing visible (only control, zero-width or bidi characters)")
        raise DataError(problem, file=str(path), row=row, field=field, fix="fill it or remove the row")
    return value


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
    """(row index, record) from .jsonl / .json (a list) / .jsonl.gz / .parquet, with file/row errors.

    Every way a file can be damaged (bad JSON, non-UTF-8 bytes, a truncated .gz, a corrupt parquet, no rows at all)
    raises a `DataError` naming the file and, where known, the row."""
    n = 0
    for n, (i, rec) in enumerate(_read_records(path), 1):
        yield i, rec
    if n == 0:
        raise DataError("the file holds no rows", file=str(path), fix="fill it or remove it from the data folder")


def _read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    name = path.name
    if name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError subclasses for damaged files
            raise DataError(f"not a readable parquet file ({str(exc).splitlines()[0][:80]})", file=str(path),
                            fix="re-download or re-export it") from None
        for i, rec in enumerate(table.to_pylist()):
            yield i, rec
        return
    opener = gzip.open if name.endswith(".gz") else open
    row = 0
    try:
        with opener(path, "rb") as fh:
            if ".jsonl" in name:
                for row, raw in enumerate(fh):  # bytes, decoded line by line: a bad byte is blamed on its own row
                    line = raw.decode("utf-8-sig" if row == 0 else "utf-8")
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise DataError(f"invalid JSON ({exc.msg})", file=str(path), row=row, fix="fix or remove the line") from None
                    if not isinstance(rec, dict):
                        raise DataError("expected a JSON object", file=str(path), row=row, fix="one JSON object per line")
                    yield row, rec
            else:
                raw = fh.read()
                try:
                    data = json.loads(raw.decode("utf-8-sig"))
                except json.JSONDecodeError as exc:
                    raise DataError(f"invalid JSON ({exc.msg} at line {exc.lineno})", file=str(path), fix="fix the file") from None
                if not isinstance(data, list):
                    raise DataError("expected a JSON list of objects", file=str(path), fix="wrap the rows in [...]")
                for i, rec in enumerate(data):
                    if not isinstance(rec, dict):
                        raise DataError("expected a JSON object", file=str(path), row=i, fix="every list item is one row object")
                    yield i, rec
    except UnicodeDecodeError as exc:
        where = f"offset {exc.start} of the line" if ".jsonl" in name else f"byte offset {exc.start}"
        raise DataError(f"not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at {where})", file=str(path),
                        row=row if ".jsonl" in name else None, fix="re-encode the file as UTF-8") from None
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"damaged or truncated gzip after row {row} ({exc})", file=str(path), fix="re-download or re-compress it") from None


def need(rec: dict[str, Any], field: str, types: type | tuple[type, ...], path: Path, row: int) -> Any:
    """`rec[field]`, checked against `types` (a bool is never accepted as an int: `true` is not id 1)."""
    if field not in rec:
        raise DataError("missing column", file=str(path), row=row, field=field, fix="every row needs it for this schema")
    value = rec[field]
    want = types if isinstance(types, tuple) else (types,)
    if (isinstance(value, bool) and bool not in want) or not isinstance(value, want):
        names = "/".join(t.__name__ for t in want)
        raise DataError(f"expected {names}, got {type(value).__name__} {str(value)[:40]!r}", file=str(path), row=row, field=field,
                        fix=f"write a JSON {'true/false' if bool in want else names}")
    return value


def need_text(rec: dict[str, Any], field: str, path: Path, row: int) -> str:
    """A string field that must hold text (prompts): empty, whitespace-only and invisible values are refused."""
    return check_visible(need(rec, field, str, path, row), path, row, field)


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
