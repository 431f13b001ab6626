"""Hub datasets at a pinned revision: online, or from the local hub cache under `HF_HUB_OFFLINE=1`.

Online, `load_split` is `datasets.load_dataset(id, name, revision=..., split=...)`: it downloads into the hub cache
(`$HF_HUB_CACHE`, `datasets--<org>--<name>/snapshots/<commit>/`) as usual.

Offline, datasets 5.x never reads that cache for a hub id: `dataset_module_factory` raises `OfflineModeIsEnabled`
before its first lookup and falls back to datasets' own prepared-arrow cache (`$HF_DATASETS_CACHE`), whatever
revision was asked for. So the revision is resolved here the way huggingface_hub does it
(`refs/<branch or tag>` -> commit -> `snapshots/<commit>/`), and `load_dataset` reads that snapshot folder with the
repository's own dataset-card configs. Either way the rows come from the revision asked for, and a revision the
cache lacks is a one-line `BenchError`, not a traceback. tests/test_hub_offline.py builds such a cache and runs
`bench run` through it.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from harness.errors import BenchError

from .common import hub_offline

log = logging.getLogger("bench")


def cached_snapshot(hub_id: str, revision: str) -> str:
    """The snapshot folder of `hub_id` at `revision` (a commit, branch or tag) in the local hub cache."""
    from huggingface_hub import constants, snapshot_download

    try:
        return snapshot_download(hub_id, repo_type="dataset", revision=revision, local_files_only=True)
    except Exception as exc:  # LocalEntryNotFoundError (revision not cached), IncompleteSnapshotError
        raise BenchError(f"{hub_id}@{revision} is not in the local hub cache {constants.HF_HUB_CACHE} and HF_HUB_OFFLINE=1: "
                         f"pass --data-dir / BENCH_DATA_DIR with local copies, download that revision once online, "
                         f"or fix --set data.revision ({type(exc).__name__})") from exc


LOCAL_HINT = "pass --data-dir DIR or set BENCH_DATA_DIR to a folder of local copies (the Makefile sets ../shared/data)"


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """A TCP connection to the hub's endpoint ($HF_ENDPOINT) opens within `timeout`: checked once per process before
    the first online load, so an unreachable hub costs seconds and one line, not a minute of the hub client's retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout):
            return True
    except OSError:
        return False


def load_split(hub_id: str, revision: str, split: str, *, name: str | None = None, data_dir: str | None = None) -> Any:
    """One split of a hub dataset (a `datasets.Dataset`) at `revision`; `name` picks a dataset-card config,
    `data_dir` a folder of the repository (HH-RLHF's `harmless-base`). With the hub unreachable the local hub cache
    is read (after a one-line hint) and a revision it lacks is one BenchError line, before any retry."""
    import datasets

    what = f"{hub_id}@{revision} ({'/'.join(x for x in (name or data_dir, split) if x)})"
    try:
        if hub_offline():
            return datasets.load_dataset(cached_snapshot(hub_id, revision), name, data_dir=data_dir, split=split)
        if not hub_reachable():
            from huggingface_hub import constants

            try:
                snapshot = cached_snapshot(hub_id, revision)
            except BenchError:
                raise BenchError(f"the Hugging Face hub ({constants.ENDPOINT}) is unreachable and {hub_id}@{revision} is not in the local "
                                 f"hub cache: {LOCAL_HINT}") from None
            log.warning("the Hugging Face hub (%s) is unreachable: reading %s from the local hub cache; %s", constants.ENDPOINT, hub_id, LOCAL_HINT)
            return datasets.load_dataset(snapshot, name, data_dir=data_dir, split=split)
        return datasets.load_dataset(hub_id, name, revision=revision, data_dir=data_dir, split=split)
    except BenchError:
        raise
    except Exception as exc:  # network, auth, unknown revision / config / split, damaged files
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BenchError(f"cannot load {what}: {first} (check the network and data.revision, or pass --data-dir)") from exc
