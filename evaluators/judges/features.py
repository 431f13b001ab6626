"""Text features for the judges: frozen sentence embeddings (cached on disk per text) and cheap surface features.

Embeddings: a frozen encoder, mean-pooled and L2-normalised (sentence-transformers' own pooling for
all-MiniLM-L6-v2), texts cut to `max_length` tokens. Each text is embedded once per (encoder fingerprint,
max_length): vectors live as float16 blobs in `cache_dir()/judges/embeddings.sqlite`, shared by every judge and
every run, so a second training run or a re-score costs a lookup. Writes are one SQLite transaction (atomic).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import sqlite3
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.errors import BenchError
from harness.io import init_sqlite_cache

log = logging.getLogger("bench")
BACKBONES = ("minilm", "smollm2")


def _key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class EmbeddingStore:
    """{(encoder id, sha256(text)) -> float16 vector} in one SQLite file."""

    def __init__(self, path: Path | None = None):
        if path is None:
            from harness.models import cache_dir

            path = cache_dir() / "judges" / "embeddings.sqlite"
        self.path = path
        init_sqlite_cache(path, "CREATE TABLE IF NOT EXISTS emb (encoder TEXT, key TEXT, vec BLOB, PRIMARY KEY (encoder, key))", timeout=120)

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=120)

    def get(self, encoder: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._db() as db:
            for i in range(0, len(keys), 500):
                chunk = list(keys[i : i + 500])
                q = f"SELECT key, vec FROM emb WHERE encoder = ? AND key IN ({','.join('?' * len(chunk))})"
                for k, v in db.execute(q, [encoder, *chunk]).fetchall():
                    out[k] = np.frombuffer(v, dtype=np.float16).astype(np.float32)
        return out

    def put(self, encoder: str, keys: Sequence[str], vecs: np.ndarray) -> None:
        rows = [(encoder, k, np.asarray(v, dtype=np.float16).tobytes()) for k, v in zip(keys, vecs)]
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?)", rows)


@lru_cache(maxsize=2)
def _load_encoder(backbone: str):
    """(model, tokenizer, fingerprint) of a frozen backbone."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from harness.models import model_fingerprint

    if backbone == "minilm":
        from evaluators.score_models import minilm_path

        path = minilm_path()
    elif backbone == "smollm2":
        from harness.models import resolve_model

        path = resolve_model("smollm2-135m-instruct")
    else:
        raise BenchError(f"unknown judge backbone {backbone!r}: choose one of {', '.join(BACKBONES)} (or tfidf)")
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    model = AutoModel.from_pretrained(str(path), dtype=torch.float32).eval()
    return model, tok, f"{backbone}:{model_fingerprint(path)}"


def backbone_fingerprint(backbone: str) -> str:
    if backbone in ("tfidf", "char"):
        import sklearn

        return f"{backbone}:sklearn-{sklearn.__version__}"
    return _load_encoder(backbone)[2]


def embed(texts: Sequence[str], backbone: str = "minilm", max_length: int = 128, batch_size: int = 32,
          store: EmbeddingStore | None = None) -> np.ndarray:
    """(n, d) float32 mean-pooled, L2-normalised embeddings; cached texts are read, the rest computed and stored."""
    import torch

    from harness.progress import progress_bar

    model, tok, fp = _load_encoder(backbone)
    enc_id = f"{fp}:{max_length}:mean"
    store = store or EmbeddingStore()
    keys = [_key(t) for t in texts]
    have = store.get(enc_id, sorted(set(keys)))
    todo = sorted({k: t for k, t in zip(keys, texts) if k not in have}.items(), key=lambda kv: -len(kv[1]))
    if todo:
        log.info("embedding %d texts with %s (max_length %d)", len(todo), backbone, max_length)
    with progress_bar(f"embed ({backbone})", total=len(todo)) as bar, torch.no_grad():
        for s in range(0, len(todo), batch_size):
            chunk = todo[s : s + batch_size]
            batch = tok([t for _, t in chunk], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state  # (B, T, H)
            mask = batch["attention_mask"].unsqueeze(-1).float()
            vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            vec = torch.nn.functional.normalize(vec, dim=-1).numpy()
            store.put(enc_id, [k for k, _ in chunk], vec)
            have.update({k: v.astype(np.float16).astype(np.float32) for (k, _), v in zip(chunk, vec)})
            bar.advance(len(chunk))
    return np.stack([have[k] for k in keys]) if keys else np.zeros((0, 1), dtype=np.float32)


_WORD = re.compile(r"\w+")


def surface(responses: Sequence[str]) -> np.ndarray:
    """(n, 4): log characters, log words, log lines, share of list/code lines: the verbosity a judge may use."""
    rows = []
    for r in responses:
        lines = r.splitlines() or [""]
        listy = sum(1 for ln in lines if re.match(r"\s*([-*•]|\d+[.)]|```)", ln))
        rows.append([math.log1p(len(r)), math.log1p(len(_WORD.findall(r))), math.log1p(len(lines)), listy / len(lines)])
    return np.asarray(rows, dtype=np.float32)


_STOP = frozenset("a an the of to in and or is are was be for on with it this that i you me my your do does can how what why".split())


def overlap(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """(n, 5): how the response relates to the request: share of the prompt's content words it repeats, share of
    its own words that are new, whether it opens with a refusal phrase, whether it asks a question back, and its
    share of digits. Cheap relevance cues a bag of words of the response alone cannot see."""
    from evaluators.judges.refusal import string_match

    rows = []
    for p, r in zip(prompts, responses):
        pw = {w for w in _WORD.findall(last_user_turn(p).lower()) if w not in _STOP}
        rw = [w for w in _WORD.findall(r.lower()) if w not in _STOP]
        rs = set(rw)
        cover = len(pw & rs) / len(pw) if pw else 0.0
        novel = len(rs - pw) / len(rs) if rs else 0.0
        digits = sum(c.isdigit() for c in r) / max(1, len(r))
        rows.append([cover, novel, string_match(r), float("?" in r[-200:]), digits])
    return np.asarray(rows, dtype=np.float32)


def last_user_turn(prompt: str) -> str:
    """The final human turn of an HH-style dialogue (the whole prompt otherwise): what an embedding of the prompt reads."""
    i = prompt.rfind("Human:")
    return prompt[i + len("Human:"):].strip() if i >= 0 else prompt
