"""P-SACPO (arXiv 2404.11049 §6; methods.md §4.4): SACPO plus a linear weight merge, no extra training.

    θ(q) = (1 − q)·θ_{π_r} + q·θ_{SACPO}

Interpolating between the helpfulness model π_r and the SACPO model (β/λ = 0.01) approximates the policies of
intermediate λ without training one model per λ (an empirical shortcut; upstream merges with mergekit in bf16,
q ∈ {0.25, 0.5, 0.75} [code `config/merge/*.yaml`]). We merge tensor by tensor with float32 accumulation.
With `safety_first` the stage-1 model is the safety model, and the merge runs between it and the final model.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch

from harness.errors import BenchError
from methods.base import TrainContext, TrainResult
from methods.sacpo import SACPO, SACPOConfig


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


@dataclass
class PSACPOConfig(SACPOConfig):
    """P-SACPO: the SACPO settings (defaults β/λ = 0.01, as the paper's merges) plus the merge ratio q."""

    q: float = field(default=0.5, metadata={"help": "merge ratio: 0 = π_r, 1 = the SACPO model [code q ∈ {0.25, 0.5, 0.75}]"})


class PSACPO:
    """Runs SACPO, then merges π_r and the SACPO model with ratio q."""

    name: ClassVar[str] = "p-sacpo"
    config_class: ClassVar[type] = PSACPOConfig

    def __init__(self, config: PSACPOConfig):
        if not 0.0 <= config.q <= 1.0:
            raise BenchError(f"methods.p-sacpo.q must be in [0, 1] (got {config.q})")
        self.sacpo = SACPO(config)
        self.config = config

    def train(self, ctx: TrainContext) -> TrainResult:
        first, final, info = self.sacpo.run_stages(ctx, ctx.work_dir / "sacpo_final")
        q = self.config.q
        record = {"merge": {"q": q, "a": str(first), "b": str(final), "rule": "(1-q)*a + q*b, float32 accumulation"}}
        out = merge_models(first, final, q, ctx.out_dir, record)
        ctx.log({"stage": "merge", "q": q})
        return TrainResult(model_path=str(out), models_trained=2, networks_held=["policy", "reference"], extra={**info, "q": q})
