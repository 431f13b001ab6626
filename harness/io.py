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
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterator

__all__ = [
    "TRAIN_RECORD", "atomic_dir", "atomic_path", "copy_dir_atomic", "git_hash", "read_json", "save_model_atomic",
    "versions", "write_json", "write_text",
]

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
