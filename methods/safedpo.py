"""SafeDPO (arXiv 2505.20065, ICLR 2026; docs/methods.md §7): a hard safety constraint in one DPO run.

The target is `π*(y|x) ∝ π_ref(y|x)·exp(r/β)·1[safe(x, y)]`. SafeDPO reaches it from helpfulness pairs with
per-response safety labels by (1) a data transform T(D) and (2) a safety margin Δ inside the sigmoid:

    T(D): keep (y_w, y_l) if y_w is safe; swap if y_w is unsafe and y_l safe; drop if both are unsafe.
    L = −E_{T(D)} log σ( β·[h(y_w') − h(y_l')] − (u_l' − u_w')·Δ ),     u = 1 − is_safe,  Δ ≥ 0

After T, u_w' ≤ u_l', so the margin only touches safe-vs-unsafe pairs and demands extra separation; Δ = 0 is plain
DPO on T(D), and the paper claims the optimum is the same for every Δ ≥ 0. No official code exists; constants are
unknown ([verify]). Networks: policy + frozen reference; no λ (hard constraint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from harness.config import RangeChecked
from harness.errors import BenchError
from methods.base import TrainContext, TrainResult

if TYPE_CHECKING:
    from harness.types import PreferencePair


def safedpo_transform(pairs: Sequence["PreferencePair"]) -> tuple[list["PreferencePair"], dict[str, int]]:
    """T(D) over helpfulness pairs (chosen = more helpful) carrying `chosen_safe` / `rejected_safe` labels.

    Pairs missing either label cannot be placed and are dropped (counted as `dropped_unlabelled`).
    Counts: kept_both_safe, kept_safe_unsafe, swapped, dropped_both_unsafe, dropped_unlabelled, total.
    """
    counts = dict(kept_both_safe=0, kept_safe_unsafe=0, swapped=0, dropped_both_unsafe=0, dropped_unlabelled=0, total=len(pairs))
    out: list[PreferencePair] = []
    for p in pairs:
        if p.chosen_safe is None or p.rejected_safe is None:
            counts["dropped_unlabelled"] += 1
        elif p.chosen_safe:
            out.append(p)
            counts["kept_both_safe" if p.rejected_safe else "kept_safe_unsafe"] += 1
        elif p.rejected_safe:
            out.append(p.swapped())
            counts["swapped"] += 1
        else:
            counts["dropped_both_unsafe"] += 1
    return out, counts


def safedpo_margins(pairs: Sequence["PreferencePair"], delta: float) -> list[float]:
    """The additive term inside the sigmoid, `−(u_l' − u_w')·Δ`, for transformed pairs (as `train_dpo`'s `margins`).

    `harness.training.losses.dpo_loss` computes `−log σ(β·Δh + margin)`, so the SafeDPO term is passed with its minus sign.
    """
    if delta < 0:
        raise ValueError(f"SafeDPO's margin Δ must be >= 0 (got {delta})")

    def unsafe(safe: bool | None) -> float:
        if safe is None:
            raise ValueError("safedpo_margins needs labelled pairs: run safedpo_transform first")
        return 0.0 if safe else 1.0

    return [-(unsafe(p.rejected_safe) - unsafe(p.chosen_safe)) * delta for p in pairs]


@dataclass
class SafeDPOConfig(RangeChecked):
    """SafeDPO: DPO on T(D_r) with the safety margin Δ. The paper's β and Δ are not known [verify]."""

    beta: float | None = field(default=None, metadata={"range": ">0", "help": "DPO β; None = train.beta [ours; paper value unknown]"})
    delta: float = field(default=1.0, metadata={"range": ">=0", "help": "safety margin Δ ≥ 0 in implicit-reward units (β·h); 0 = plain DPO on T(D) [ours; verify paper]"})


class SafeDPO:
    """DPO on safety-transformed helpfulness pairs, with an extra margin on safe-vs-unsafe pairs."""

    name: ClassVar[str] = "safedpo"
    config_class: ClassVar[type] = SafeDPOConfig

    def __init__(self, config: SafeDPOConfig):  # delta and beta: their "range" metadata, checked when the config is built
        self.config = config

    def train(self, ctx: TrainContext) -> TrainResult:
        from harness.training.dpo import read_train_record, train_dpo

        beta = self.config.beta if self.config.beta is not None else ctx.cfg.train.beta
        pairs, counts = safedpo_transform(ctx.reward_pairs)
        ctx.log({"stage": "transform", **counts, "pairs_used": len(pairs)})
        if not pairs:
            raise BenchError(f"SafeDPO: no pair survives the safety transform ({counts}); the dataset needs per-response safety labels")
        # Δ = 0 is plain DPO on T(D): the stock TRL loss runs (no margin column).
        margins = safedpo_margins(pairs, self.config.delta) if self.config.delta > 0 else None
        out = train_dpo(pairs, init=ctx.policy_path, ref=None, beta=beta, out_dir=ctx.out_dir, cfg=ctx.cfg, device=ctx.device,
                        margins=margins, run_name="safedpo")
        rec = read_train_record(out)
        ctx.log({"stage": "dpo", "train_loss": rec.get("train_loss"), "steps": rec.get("steps"), "pairs": rec.get("pairs")})
        extra: dict[str, Any] = {"beta": beta, "delta": self.config.delta, "transform": counts}
        return TrainResult(model_path=str(out), models_trained=1, networks_held=["policy", "reference"], extra=extra)
