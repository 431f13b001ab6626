"""Linear weight merging of two saved models of one architecture: `(1 − q)·θ_a + q·θ_b`, tensor by tensor.

Used by P-SACPO (π_r with the SACPO model) and SACPO's naive-merge ablation (DPO(helpful) with DPO(safe), both from
the SFT model); docs/methods.md §4.4. Float32 accumulation, cast back to a's dtype; upstream merges with mergekit in bf16.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any, Mapping

import torch


def merge_state_dicts(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], q: float) -> dict[str, torch.Tensor]:
    """`(1 − q)·a + q·b` per floating tensor, computed in float32 and cast back to a's dtype.

    Non-floating tensors (integer buffers) must be equal in both and are copied. Key sets and shapes must match:
    merging two different architectures is a caller error, not something to paper over.
    """
    if set(a) != set(b):
        missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
        raise ValueError(f"merge_state_dicts: key sets differ (only in a: {missing[:3]}, only in b: {extra[:3]})")
    out: dict[str, torch.Tensor] = {}
    for key, ta in a.items():
        tb = b[key]
        if ta.shape != tb.shape:
            raise ValueError(f"merge_state_dicts: '{key}' has shape {tuple(ta.shape)} in a but {tuple(tb.shape)} in b")
        if ta.is_floating_point():
            merged = (1.0 - q) * ta.detach().to(torch.float32) + q * tb.detach().to(device=ta.device, dtype=torch.float32)
            out[key] = merged.to(ta.dtype)
        else:
            if not torch.equal(ta, tb.to(ta.device)):
                raise ValueError(f"merge_state_dicts: non-floating tensor '{key}' differs between the two models")
            out[key] = ta.detach().clone()
    return out


def merge_models(path_a: Path, path_b: Path, q: float, out_dir: Path, record: dict[str, Any]) -> Path:
    """Load two saved models (float32, CPU), merge their weights, save the result with a's tokenizer to `out_dir`."""
    from transformers import AutoModelForCausalLM

    from harness.io import save_model_atomic
    from harness.models import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path_a), dtype=torch.float32)
    other = AutoModelForCausalLM.from_pretrained(str(path_b), dtype=torch.float32)
    merged = merge_state_dicts(model.state_dict(), other.state_dict(), q)
    del other
    gc.collect()
    model.load_state_dict(merged)
    save_model_atomic(model, load_tokenizer(path_a), Path(out_dir), record)
    del model, merged
    gc.collect()
    return Path(out_dir)
