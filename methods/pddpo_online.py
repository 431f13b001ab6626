"""`pddpo-online`: O-PD-DPO, the online variant of PD-DPO (docs/methods.md §2.8).

Known from the paper: exploration bonuses from inverted feature covariances go *inside* the rearranged DPO
objective. The loss used here is the spec's **RECONSTRUCTION [derived], not the paper's published loss**:

    B = b_r + λ·b_c,   b_·(x,y) = α_··‖φ(x,y)‖_{Σ_·^{-1}},   Σ_· = κI + Σ_pairs (φ1 − φ2)(φ1 − φ2)ᵀ
    L_k^on(θ) = −E_{D_c} log σ( (β/λ_k)·[h^{π_r̂}(y_s) − h^{π_r̂}(y_u)] + (B(x,y_u) − B(x,y_s))/λ_k )

Per iteration [ours where the paper is silent]: sample `prompts_per_iteration` train prompts, draw two responses
each from the current policy (temperature > 0), label them with the reward annotator (D_r: chosen = higher
reward) and the cost annotator (D_c: chosen = lower cost), drop ties, append; update Σ_r, Σ_c by
Sherman–Morrison with frozen features φ (mean-pooled final hidden state of the frozen SFT model, L2-normalised);
train the bonus-augmented stage-2 loss (reference π_r̂, temperature β/λ_k) via `train_dpo(margins=...)`; then the
same dual step as offline PD-DPO. π_r̂ is fitted once on the offline D_r; online reward pairs enter through Σ_r.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from typing import Any, ClassVar

from harness.generation import close_generator
from harness.registry import lazy_function, lazy_module
from harness.types import PreferencePair, SamplingParams
from methods.base import TrainContext, TrainResult
from methods.pddpo import PDDPO, PDDPOConfig, copy_model, dual_estimate, dual_prompts, networks_held, resolve_constraint

# torch and trl load on first use: `bench list methods pddpo-online` imports this file for its config alone
torch = lazy_module("torch")
train_dpo = lazy_function("harness.training.dpo:train_dpo")
response_features = lazy_function("harness.training.logprobs:response_features")
EllipticalBonus = lazy_function("harness.training.losses:EllipticalBonus")
dual_update = lazy_function("harness.training.losses:dual_update")
online_bonus_margin = lazy_function("harness.training.losses:online_bonus_margin")
stage2_beta = lazy_function("harness.training.losses:stage2_beta")


@dataclass
class OnlinePDDPOConfig(PDDPOConfig):
    # >= 1 even at a fixed λ (offline PD-DPO allows 0 there): the online loop is what writes the model
    num_iterations: int = field(default=3, metadata={"range": ">=1", "help": "[ours] K online primal-dual iterations (each samples new pairs)"})
    prompts_per_iteration: int = field(default=8, metadata={"range": ">0", "help": "[ours] train prompts sampled per iteration (2 responses each)"})
    sample_temperature: float = field(default=0.7, metadata={"range": ">0", "help": "[ours] temperature of the two online samples (> 0, so they differ)"})
    alpha_r: float = field(default=0.1, metadata={"range": ">=0", "help": "[ours] reward bonus scale α_r (RECONSTRUCTION)"})
    alpha_c: float = field(default=0.1, metadata={"range": ">=0", "help": "[ours] cost bonus scale α_c (RECONSTRUCTION)"})
    kappa: float = field(default=1.0, metadata={"range": ">0", "help": "[ours] ridge κ > 0 of Σ_r, Σ_c (features are unit-norm)"})


class OnlinePDDPO(PDDPO):
    name: ClassVar[str] = "pddpo-online"
    config_class: ClassVar[type] = OnlinePDDPOConfig

    def train(self, ctx: TrainContext) -> TrainResult:
        c, cfg = self.config, ctx.cfg
        ctx.require_pairs(self.name, "reward", "cost", what="offline")  # to start from
        beta = c.beta or cfg.train.beta
        b, units = resolve_constraint(c, ctx)
        prompts = dual_prompts(ctx, c.max_dual_prompts)
        pool = sorted({p.prompt for p in ctx.reward_pairs} | {p.prompt for p in ctx.cost_pairs})  # train prompts only
        rng = random.Random(ctx.seed)
        reward_pairs, cost_pairs = list(ctx.reward_pairs), list(ctx.cost_pairs)

        pi_r = train_dpo(reward_pairs, init=ctx.policy_path, ref=None, beta=beta, out_dir=ctx.work_dir / "pi_r_hat",
                         cfg=cfg, device=ctx.device, run_name="pddpo-online-stage1")

        # Frozen features φ from the SFT model, held for the whole run; one cache per (prompt, response).
        from harness.models import load_policy

        feat_model, feat_tok = load_policy(ctx.policy_path, ctx.device, "fp32")
        feats: dict[tuple[str, str], torch.Tensor] = {}

        def phi(items: list[tuple[str, str]]) -> torch.Tensor:
            todo = sorted({it for it in items if it not in feats})
            if todo:
                for it, f in zip(todo, response_features(feat_model, feat_tok, [p for p, _ in todo], [r for _, r in todo], cfg, ctx.device)):
                    feats[it] = f
            return torch.stack([feats[it] for it in items])

        dim = feat_model.config.hidden_size
        bonus_r, bonus_c = EllipticalBonus(dim, c.kappa, c.alpha_r), EllipticalBonus(dim, c.kappa, c.alpha_c)

        def fold_in(bonus: EllipticalBonus, pairs: list[PreferencePair]) -> None:
            if pairs:
                bonus.add_pairs(phi([(p.prompt, p.chosen) for p in pairs]), phi([(p.prompt, p.rejected) for p in pairs]))

        fold_in(bonus_r, reward_pairs)
        fold_in(bonus_c, cost_pairs)

        fixed = c.fixed_lambda is not None
        lam = c.fixed_lambda if fixed else c.lambda_init
        policy, trajectory = pi_r, []
        for k in range(1, c.num_iterations + 1):
            # 1. explore: two samples per prompt from the current policy, labelled by the annotators
            batch = rng.sample(pool, min(c.prompts_per_iteration, len(pool)))
            new_r, new_c = self._sample_pairs(ctx, policy, batch, k)
            reward_pairs += new_r
            cost_pairs += new_c
            fold_in(bonus_r, new_r)
            fold_in(bonus_c, new_c)

            # 2. primal: bonus-augmented stage-2 DPO against π_r̂ (RECONSTRUCTION)
            out = ctx.out_dir if k == c.num_iterations else ctx.work_dir / f"pi_{k}"
            trained = lam > c.lambda_min
            margin_mean = None
            if trained:
                phi_s = phi([(p.prompt, p.chosen) for p in cost_pairs])
                phi_u = phi([(p.prompt, p.rejected) for p in cost_pairs])
                margins = online_bonus_margin(lam, bonus_r(phi_s), bonus_r(phi_u), bonus_c(phi_s), bonus_c(phi_u))
                margin_mean = float(margins.mean())
                init = policy if c.warm_start == "previous" else pi_r
                new = train_dpo(cost_pairs, init=init, ref=pi_r, beta=stage2_beta(beta, lam), out_dir=out, cfg=cfg,
                                device=ctx.device, margins=margins.tolist(), run_name=f"pddpo-online-primal-{k}")
            else:
                new = copy_model(pi_r, out) if k == c.num_iterations else pi_r
            if policy not in (pi_r, new) and not c.keep_iterates:
                shutil.rmtree(policy, ignore_errors=True)
            policy = new

            # 3. dual
            record: dict[str, Any] = {"iteration": k, "lambda": lam, "beta_stage2": stage2_beta(beta, lam) if trained else None,
                                      "trained": trained, "new_reward_pairs": len(new_r), "new_cost_pairs": len(new_c),
                                      "reward_pairs": len(reward_pairs), "cost_pairs": len(cost_pairs), "bonus_margin_mean": margin_mean}
            record.update(dual_estimate(ctx, policy, pi_r, units, prompts, c.dual_temperature, same_as_reference=not trained))
            lam_next = lam if fixed else dual_update(lam, record["cost_estimate"], b, c.eta, c.lambda_max)
            record.update(lambda_next=lam_next, threshold=b)
            ctx.log(record)
            trajectory.append(record)
            lam = lam_next

        del feat_model
        return TrainResult(
            model_path=str(ctx.out_dir), models_trained=2,
            networks_held=networks_held(["frozen SFT feature model (φ for the elliptical bonuses)"]), trajectory=trajectory,
            extra={"mode": "online", "beta": beta, "threshold": b, "threshold_units": units, "lambda_final": lam,
                   "iterations": c.num_iterations, "loss": "RECONSTRUCTION (docs/methods.md §2.8), not the paper's loss",
                   "provenance": "no O-PD-DPO experiment is known [paper]; every setting here is [ours]"},
        )

    def _sample_pairs(self, ctx: TrainContext, policy, prompts: list[str], k: int) -> tuple[list[PreferencePair], list[PreferencePair]]:
        """Two samples per prompt from `policy`; reward pairs (chosen = higher reward) and cost pairs (chosen = lower
        cost, i.e. safer). Ties and identical responses carry no preference and are dropped."""
        g, c = ctx.cfg.generation, self.config
        gen = ctx.make_generator(policy)
        draws = [gen.generate(prompts, SamplingParams(max_new_tokens=g.max_new_tokens, temperature=c.sample_temperature,
                                                      top_p=g.top_p, seed=ctx.seed + 1000 * k + j)) for j in (0, 1)]
        close_generator(gen)  # before the annotators score: vLLM and a scorer never share the GPU
        y1, y2 = draws
        r1, r2 = (ctx.reward_annotator().score(prompts, y) for y in (y1, y2))
        c1, c2 = (ctx.cost_annotator().score(prompts, y) for y in (y1, y2))
        src = f"online:iter{k}"
        new_r = [PreferencePair(x, a, b_, source=src) if ra > rb else PreferencePair(x, b_, a, source=src)
                 for x, a, b_, ra, rb in zip(prompts, y1, y2, r1, r2) if ra != rb and a.strip() != b_.strip()]
        new_c = [PreferencePair(x, a, b_, chosen_safe=ca <= 0, rejected_safe=cb <= 0, source=src) if ca < cb
                 else PreferencePair(x, b_, a, chosen_safe=cb <= 0, rejected_safe=ca <= 0, source=src)
                 for x, a, b_, ca, cb in zip(prompts, y1, y2, c1, c2) if ca != cb and a.strip() != b_.strip()]
        return new_r, new_c
