"""A Hugging Face hub cache written the way huggingface_hub writes one on download, for offline tests of the hub paths.

`<cache>/<type>s--<org>--<name>/blobs/<etag>` holds each file once; `snapshots/<commit>/<path>` are relative symlinks
to the blobs; `refs/<branch or tag>` holds the commit (no newline). The etag of an LFS file (weights, parquet, jsonl)
is its sha256, of a git file (README.md, config.json, tokenizer files) its git blob sha1.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

GIT_FILES = (".md", ".json", ".txt", ".jinja", ".gitattributes")  # small text files stay in git; the rest go to LFS


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def add_snapshot(cache: Path, repo_id: str, commit: str, files: dict[str, bytes], refs: tuple[str, ...] = (), repo_type: str = "dataset") -> Path:
    """One commit of a repo (`dataset` or `model`) in the hub cache layout; returns its snapshot folder."""
    root = cache / f"{repo_type}s--{repo_id.replace('/', '--')}"
    snap = root / "snapshots" / commit
    for rel, data in files.items():
        etag = _git_blob_sha1(data) if rel.endswith(GIT_FILES) and not rel.endswith(".jsonl") else hashlib.sha256(data).hexdigest()
        blob = root / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return snap
