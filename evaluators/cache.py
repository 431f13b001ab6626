"""A persistent score cache keyed by (scorer fingerprint, prompt, response), and the batching base class.

Scores live in one SQLite file under `cache_dir()/scores/`, so re-scoring a finished run, or the SFT baseline every
method is compared with, costs nothing. A scorer's fingerprint changes whenever its scores could (weights, revision,
template, truncation), so stale entries are never read.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Iterable

from harness.io import init_sqlite_cache
from harness.progress import progress_bar


def _key(prompt: str, response: str) -> str:
    return hashlib.sha256(f"{prompt}\x00{response}".encode()).hexdigest()


class ScoreCache:
    """`get(fp, pairs) -> {index: score}` and `put(fp, pairs, scores)` over a small SQLite table."""

    def __init__(self, path: Path | None = None):
        if path is None:
            from harness.models import cache_dir

            path = cache_dir() / "scores" / "scores.sqlite"
        self.path = path
        init_sqlite_cache(path, "CREATE TABLE IF NOT EXISTS scores (fingerprint TEXT, key TEXT, score REAL, PRIMARY KEY (fingerprint, key))")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        db.execute("PRAGMA busy_timeout = 60000")
        return db

    def get(self, fingerprint: str, pairs: list[tuple[str, str]]) -> dict[int, float]:
        keys = [_key(p, r) for p, r in pairs]
        found: dict[str, float] = {}
        with self._connect() as db:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                q = f"SELECT key, score FROM scores WHERE fingerprint = ? AND key IN ({','.join('?' * len(chunk))})"
                found.update(db.execute(q, [fingerprint, *chunk]).fetchall())
        return {i: found[k] for i, k in enumerate(keys) if k in found}

    def put(self, fingerprint: str, pairs: Iterable[tuple[str, str]], scores: Iterable[float]) -> None:
        rows = [(fingerprint, _key(p, r), float(s)) for (p, r), s in zip(pairs, scores)]
        with self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?)", rows)


class BatchedScorer:
    """Base for model scorers: cache lookup, then `_score_batch` on the misses in batches, with a progress bar.

    Subclasses set `name`, `kind`, `fingerprint`, `is_binary`, `batch_size` and implement `_score_batch`.
    `use_cache=False` skips the disk cache (tests, in-training evaluation).
    """

    name: str
    kind: str
    fingerprint: str
    is_binary: bool = False
    batch_size: int = 32
    use_cache: bool = True

    def _score_batch(self, prompts: list[str], responses: list[str]) -> list[float]:
        raise NotImplementedError

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{self.name}: {len(prompts)} prompts but {len(responses)} responses")
        pairs = list(zip(prompts, responses))
        cache = ScoreCache() if self.use_cache else None
        out: dict[int, float] = cache.get(self.fingerprint, pairs) if cache else {}
        todo = [i for i in range(len(pairs)) if i not in out]
        # longest first: similar lengths share a batch (less padding); the first batch shows the memory peak
        todo.sort(key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        with progress_bar(f"score ({self.name})", total=len(todo)) as bar:
            for s in range(0, len(todo), self.batch_size):
                idx = todo[s : s + self.batch_size]
                scores = self._score_batch([pairs[i][0] for i in idx], [pairs[i][1] for i in idx])
                for i, v in zip(idx, scores):
                    out[i] = float(v)
                if cache:
                    cache.put(self.fingerprint, [pairs[i] for i in idx], scores)
                bar.advance(len(idx))
        return [out[i] for i in range(len(pairs))]
