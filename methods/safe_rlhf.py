"""`safe-rlhf`: PPO-Lagrangian with a learned multiplier (Safe-RLHF, arXiv 2310.12773; docs/methods.md §3).

    min_θ max_{λ≥0}  −J_R(θ) + λ·(J_C(θ) − d)

Six networks are held: the actor (the policy being trained), a frozen reference (the SFT model), a frozen reward
model R and cost model C (trained first on this method's own train split via `ctx.train_score_model`; never the
evaluation scorers), and a reward critic and a cost critic (per-token value heads). Each iteration:

    1. rollout      sample one response per train prompt (temperature 1); log-probs under actor and reference;
                    end scores R(x,y), C(x,y); per-token values from each critic
    2. update λ     log λ ← log λ + lr·λ·(Ĉ − d) on the mean of the last 128 episode costs, capped at log λ_max
    3. advantages   KL-shaped reward/cost streams, GAE per stream with its critic, A = (A^R − λ·A^C)/(1+λ)
    4. PPO step     clipped surrogate on the actor, clipped value loss on each critic
    5. log          ctx.log({step, lambda, cost_window_mean, reward_mean, kl, actor_loss, ...})

and finally the actor is saved to `ctx.out_dir`.

Size (`ppo_size`): `full` (upstream, the default, and what the paper's memory claim compares against) trains every
weight of the actor and both critics and keeps the reference as a separate frozen copy. `lora` trains LoRA adapters
instead: the reference is the actor with its adapters disabled (the SFT weights exactly, no copy); a critic that
starts from the SFT backbone is another adapter on the actor's frozen base weights plus its own value head, and one
copied from a causal score model keeps its frozen copy with adapters on it. `gradient_checkpointing` and
`frozen_dtype` (R, C and a full-size reference in bf16) apply to either; docs/memory.md has the measurements
(`benchmarks/p3_memory.py`, `benchmarks/ppo_frozen_bf16.py`) and `extra` records the size that ran. The math lives in `harness/training/rl_math.py` (unit-tested); the networks,
rollouts and batching shared with `ppo_shaping` in `harness/training/ppo.py`. Why this file is ~460 lines, over the ~300 of
docs/style.md: the loop is one class whose five steps and setup are the hooks `PPOShaping` overrides, and
splitting it further would scatter one algorithm across files (the LoRA networks live in `harness/training/ppo.py`).
`methods/ppo_shaping.py` runs this same loop with a fixed ν and one critic.

Upstream (read, not copied): PKU-Alignment/safe-rlhf@82743cc `safe_rlhf/algorithms/ppo_lag/trainer.py`,
`safe_rlhf/trainers/rl_trainer.py`, `scripts/ppo-lag.sh`. Differences, all deliberate:
- **R and C** are trained by `evaluators.score_models` (Safe-RLHF's losses) on the SFT policy's backbone by default
  (`score_backbone="policy"`, as upstream), and each critic is a copy of R / C read at every position. With a small
  encoder instead (`score_backbone="minilm"`: faster on CPU, but another tokenizer and bidirectional, so it cannot
  be a per-token critic) the critics start from the SFT backbone with a zero head; `extra.critic_init` says which.
- **PTX off by default.** Upstream adds a supervised Alpaca loss (×16) as a separate actor step. No Alpaca data
  ships with the harness, so `ptx_data` is empty (off); point it at a JSONL of {"prompt", "response"} to enable it.
- **Position ids** are derived from the attention mask in every forward pass, matching `generate` on left-padded
  prompts (upstream relies on defaults).
- Scale-out: DDP through accelerate works as is (the episode-cost window is averaged over ranks, as upstream).
  7B-class runs need ZeRO-3 for the frozen models too (docs/scale-out.md, TRL's `prepare_deepspeed`): not wired here.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from harness.config import RangeChecked
from harness.monitor import phase
from harness.registry import lazy_function, lazy_module
from methods.base import TrainContext, TrainResult

# torch and the PPO library load on first use: `bench list methods safe-rlhf` imports this file for its config alone.
# Each helper stays an attribute of this module, so a test patches it here. The classes live in harness.training.ppo.
torch, nn = lazy_module("torch"), lazy_module("torch.nn")
AdapterValueModel = lazy_function("harness.training.ppo:AdapterValueModel")
Rollout = lazy_function("harness.training.ppo:Rollout")
SharedReference = lazy_function("harness.training.ppo:SharedReference")
critic_values = lazy_function("harness.training.ppo:critic_values")
held_params = lazy_function("harness.training.ppo:held_params")
load_ptx = lazy_function("harness.training.ppo:load_ptx")
lora_actor = lazy_function("harness.training.ppo:lora_actor")
merge_lora_actor = lazy_function("harness.training.ppo:merge_lora_actor")
n_params = lazy_function("harness.training.ppo:n_params")
prompt_batches = lazy_function("harness.training.ppo:prompt_batches")
response_log_probs = lazy_function("harness.training.ppo:response_log_probs")
rss_mb = lazy_function("harness.training.ppo:rss_mb")
trainable_parameters = lazy_function("harness.training.ppo:trainable_parameters")
clipped_surrogate_loss = lazy_function("harness.training.rl_math:clipped_surrogate_loss")
clipped_value_loss = lazy_function("harness.training.rl_math:clipped_value_loss")
gae = lazy_function("harness.training.rl_math:gae")
gather_log_probs = lazy_function("harness.training.rl_math:gather_log_probs")
kl_shaped_rewards = lazy_function("harness.training.rl_math:kl_shaped_rewards")
lagrange_update = lazy_function("harness.training.rl_math:lagrange_update")
masked_mean = lazy_function("harness.training.rl_math:masked_mean")
mix_advantages = lazy_function("harness.training.rl_math:mix_advantages")
response_mask = lazy_function("harness.training.rl_math:response_mask")


def no_grad(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`@torch.no_grad()`, with torch looked up at call time rather than when the class is defined."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return fn(*args, **kwargs)

    return call

log = logging.getLogger("bench")


@dataclass
class SafeRLHFConfig(RangeChecked):
    """PPO-Lagrangian hyper-parameters; defaults are upstream's `scripts/ppo-lag.sh` (docs/methods.md §3.4).

    Sizes left at 0 follow the run config, so one file scales from the tiny profile to 7B: prompts per rollout =
    `train.batch_size` (upstream 16/device), rollouts = `train.max_steps` when set, else `rollout_epochs` (or
    `train.epochs`) passes over the train prompts, new tokens = `train.max_length − train.max_prompt_length`
    (upstream: 512 in total). The profiles set the rest (configs/*.yaml, `methods.safe-rlhf`).
    """

    # rollout
    rollout_batch_size: int = field(default=0, metadata={"range": ">=0", "help": "prompts per rollout batch; 0 = train.batch_size (upstream 16/device)"})
    num_rollout_batches: int = field(default=0, metadata={"range": ">=0", "help": "rollout batches; 0 = train.max_steps if > 0, else rollout_epochs passes over the prompts"})
    rollout_epochs: float = field(default=0.0, metadata={"range": ">=0", "help": "passes over the train prompts when no batch count is set; 0 = train.epochs (upstream 1)"})
    max_new_tokens: int = field(default=0, metadata={"range": ">=0", "help": "response length cap; 0 = train.max_length − train.max_prompt_length"})
    temperature: float = field(default=1.0, metadata={"range": ">0", "help": "rollout sampling temperature (upstream 1.0, top-p 1)"})
    update_iters: int = field(default=1, metadata={"range": ">=1", "help": "PPO steps per rollout batch (upstream 1)"})
    # PPO
    kl_coef: float = field(default=0.01, metadata={"range": ">=0", "help": "β_KL of the per-token KL shaping (script 0.01; argparse default 0.02)"})
    clip_range_ratio: float = field(default=0.2, metadata={"range": ">0", "help": "PPO ratio clip ε"})
    clip_range_score: float = field(default=50.0, metadata={"range": ">0", "help": "clip of the shaped per-token reward/cost streams"})
    clip_range_value: float = field(default=5.0, metadata={"range": ">0", "help": "value clip around the rollout-time values"})
    gamma: float = field(default=1.0, metadata={"range": "[0,1]", "help": "discount γ"})
    gae_lambda: float = field(default=0.95, metadata={"range": "[0,1]", "help": "GAE λ"})
    # optimisers (Adam betas (0.9, 0.95) as upstream's constants.py)
    actor_lr: float = field(default=1e-5, metadata={"range": ">0", "help": "actor learning rate"})
    actor_lr_scheduler: str = field(default="cosine", metadata={"help": "actor schedule (transformers get_scheduler name)"})
    actor_warmup_ratio: float = field(default=0.03, metadata={"range": "[0,1)", "help": "actor warm-up fraction"})
    actor_weight_decay: float = field(default=0.01, metadata={"range": ">=0", "help": "actor AdamW weight decay"})
    critic_lr: float = field(default=5e-6, metadata={"range": ">0", "help": "critic learning rate (both critics)"})
    critic_lr_scheduler: str = field(default="constant", metadata={"help": "critic schedule"})
    critic_weight_decay: float = field(default=0.0, metadata={"range": ">=0", "help": "critic AdamW weight decay [verify against the script]"})
    adam_betas: tuple[float, float] = field(default=(0.9, 0.95), metadata={"help": "Adam (β1, β2)"})
    max_grad_norm: float = field(default=1.0, metadata={"range": ">=0", "help": "gradient clipping (upstream DeepSpeed config: 1.0); 0 = off"})
    # Lagrangian
    threshold: float = field(default=0.0, metadata={"help": "d: constraint E[C] ≤ d on the cost model's raw end scores"})
    lambda_init: float = field(default=1.0, metadata={"range": ">0", "help": "initial λ (log λ = 0)"})
    lambda_lr: float = field(default=0.1, metadata={"range": ">=0", "help": "SGD learning rate on log λ"})
    lambda_max: float | None = field(default=5.0, metadata={"range": ">0", "help": "cap on λ (script 5; None = uncapped, the argparse default)"})
    lambda_update_delay_steps: int = field(default=0, metadata={"range": ">=0", "help": "RL steps before λ starts moving"})
    episode_cost_window: int = field(default=128, metadata={"range": ">=1", "help": "episode costs averaged for Ĉ (per rank, then over ranks)"})
    # networks
    score_backbone: str = field(default="policy", metadata={"help": "backbone of R and C: 'policy' (the SFT model + scalar head, as upstream; critics copy R/C) or an encoder name for evaluators.score_models, e.g. 'minilm'"})
    # size (docs/memory.md measures full vs LoRA side by side: benchmarks/p3_memory.py)
    ppo_size: str = field(default="full", metadata={"range": "in:full|lora", "help": "full: every weight of actor and critics trained, the reference a separate frozen copy (upstream; what the paper's memory claim compares against) | lora: LoRA adapters on actor and critics over the actor's frozen base weights, the reference = the actor with its adapters disabled (exact, no copy)"})
    lora_r: int = field(default=0, metadata={"range": ">=0", "help": "LoRA rank of the actor's and critics' adapters (ppo_size=lora); 0 = train.lora_r"})
    lora_alpha: int = field(default=0, metadata={"range": ">=0", "help": "LoRA α of those adapters (update scaled by α / r); 0 = train.lora_alpha"})
    gradient_checkpointing: bool | None = field(default=None, metadata={"help": "recompute activations in the backward pass of actor and critics (exact; less memory, one more forward per step); None = train.gradient_checkpointing"})
    frozen_dtype: str = field(default="auto", metadata={"range": "in:auto|fp32|bf16", "help": "dtype of the frozen R and C (and of the reference copy when ppo_size=full): auto = train.precision (fp32 on CPU, bf16 on GPU) | fp32 | bf16 (measured error vs fp32: docs/memory.md)"})
    # PTX (off: no Alpaca data here)
    ptx_data: str = field(default="", metadata={"help": "JSONL of {prompt, response} for the PTX loss; empty = off (upstream: Alpaca)"})
    ptx_coef: float = field(default=16.0, metadata={"range": ">=0", "help": "PTX loss weight, a separate actor step per RL step"})



# -- the method -----------------------------------------------------------------------------------------------------


class SafeRLHF:
    """PPO-Lagrangian. `ppo_shaping.PPOShaping` overrides three hooks: `stream_scores` (what each critic stream is
    paid), `update_penalty` (λ learned here, ν fixed there) and `actor_advantage` (λ-mixing here)."""

    name: ClassVar[str] = "safe-rlhf"
    config_class: ClassVar[type] = SafeRLHFConfig
    critic_streams: ClassVar[tuple[str, ...]] = ("reward", "cost")  # one critic per stream; the name sets the KL sign

    def __init__(self, config: SafeRLHFConfig):
        self.config = config

    def train(self, ctx: TrainContext) -> TrainResult:
        """setup; then per rollout batch: rollout -> update λ -> advantages -> PPO step -> log; then save."""
        c = self.config
        self.log_lambda = math.log(c.lambda_init)
        self.setup(ctx)
        prompts = self.train_prompts(ctx)
        batch_size = c.rollout_batch_size or ctx.cfg.train.batch_size
        epochs = c.rollout_epochs or ctx.cfg.train.epochs
        num_batches = c.num_rollout_batches or (ctx.cfg.train.max_steps if ctx.cfg.train.max_steps > 0
                                                else max(1, math.ceil(epochs * len(prompts) / batch_size)))
        self.setup_optimizers(num_batches * c.update_iters)
        cost_window: deque[float] = deque(maxlen=c.episode_cost_window)
        peak_rss, step = rss_mb(), 0
        for batch_idx, batch in enumerate(prompt_batches(prompts, batch_size, num_batches, ctx.seed)):
            # 1. rollout (one seed per batch and rank: reproducible sampling)
            torch.manual_seed(ctx.seed * 100_003 + batch_idx * self.accelerator.num_processes + self.accelerator.process_index)
            with phase(f"{self.name}/rollout"):
                ro = self.rollout(batch)
            cost_window.extend(ro.costs.tolist())
            for _ in range(c.update_iters):
                # 2. λ from the windowed episode cost, measured before the RL step (per rank, averaged over ranks)
                window_mean = self.accelerator.reduce(torch.tensor(sum(cost_window) / len(cost_window), device=self.device), "mean").item()
                penalty = self.update_penalty(step, window_mean)
                # 3. advantages, 4. PPO step (+ the optional PTX step)
                advantage, returns = self.compute_advantages(ro, penalty)
                with phase(f"{self.name}/ppo_step"):
                    stats = self.ppo_step(ro, advantage, returns)
                    if self.ptx is not None:
                        stats["ptx_loss"] = self.ptx_step(batch_size)
                # 5. log
                peak_rss = max(peak_rss, rss_mb())
                record = {"step": step, "lambda": penalty, "cost_window_mean": window_mean,
                          "reward_mean": ro.rewards.mean().item(), "cost_mean": ro.costs.mean().item(),
                          "kl": ((ro.log_probs - ro.ref_log_probs) * ro.mask).sum(-1).mean().item(),  # per response
                          "response_length": ro.mask.sum(-1).float().mean().item(), **stats, "rss_mb": round(rss_mb(), 1)}
                record["rollout"] = batch_idx  # harness/training/learning.py: one point per rollout for the R/C trends
                ctx.log(record)
                log.info("%s step %d/%d: lambda %.3f, cost window %.3f, reward %.3f, kl %.4f, actor loss %.4f", self.name, step + 1,
                         num_batches * c.update_iters, penalty, window_mean, record["reward_mean"], record["kl"], record["actor_loss"])
                step += 1
        with phase(f"{self.name}/save", trim=True):
            return self.save(ctx, steps=step, prompts=len(prompts), peak_rss=peak_rss)

    # -- setup ------------------------------------------------------------------------------------------------------

    def setup(self, ctx: TrainContext) -> None:
        """Train R and C on this method's train split, then load actor, reference and critics."""
        from accelerate import Accelerator
        from transformers import AutoModelForCausalLM

        from harness.models import load_policy, load_tokenizer, resolve_dtype
        from harness.training.ppo import ValueModel

        c, cfg = self.config, ctx.cfg
        self.cfg = cfg
        ctx.require_pairs(self.name, "reward", "cost")  # it trains its own reward and cost models
        # R and C first (upstream: separate runs before PPO), on this method's train split; never the evaluation scorers
        encoder = ctx.policy_path if c.score_backbone == "policy" else c.score_backbone
        with phase(f"{self.name}/score_models", trim=True):
            self.reward_model = ctx.train_score_model("reward", ctx.reward_pairs, "reward_model", encoder=encoder)
            self.cost_model = ctx.train_score_model("cost", ctx.cost_pairs, "cost_model", encoder=encoder)
        for scorer in (self.reward_model, self.cost_model):
            if isinstance(getattr(scorer, "model", None), nn.Module):
                scorer.model.requires_grad_(False)
            if hasattr(scorer, "use_cache"):
                scorer.use_cache = False  # fresh samples every step: a disk score cache would only grow

        bf16 = ctx.device == "cuda" and cfg.train.precision in ("auto", "bf16")
        self.accelerator = Accelerator(cpu=ctx.device == "cpu", mixed_precision="bf16" if bf16 else "no")
        self.device = self.accelerator.device
        self.lora = (c.lora_r or cfg.train.lora_r, c.lora_alpha or cfg.train.lora_alpha) if c.ppo_size == "lora" else None
        frozen = cfg.train.precision if c.frozen_dtype == "auto" else c.frozen_dtype
        with phase(f"{self.name}/load", trim=True):
            self.tokenizer = load_tokenizer(ctx.policy_path, padding_side="left")
            self.actor = AutoModelForCausalLM.from_pretrained(ctx.policy_path, dtype=torch.float32)  # fp32 master weights
            if self.lora:  # the reference is the actor with its adapters disabled: the SFT weights, no second copy
                self.actor = lora_actor(self.actor, *self.lora)
                self.reference = SharedReference(self.actor)
            else:
                self.reference, _ = load_policy(Path(ctx.policy_path), str(self.device), frozen)
                self.reference.requires_grad_(False)
            scorers = {"reward": self.reward_model, "cost": self.cost_model}
            self.critics = {name: self.make_critic(scorers[name], ctx.policy_path, name) for name in self.critic_streams}
            self.frozen_dtype = str(resolve_dtype(frozen, str(self.device))).removeprefix("torch.")
            for scorer in scorers.values():  # after the critics copied them, so a critic starts from the fp32 weights
                if isinstance(getattr(scorer, "model", None), nn.Module):
                    scorer.model.to(resolve_dtype(frozen, str(self.device)))
        self.gradient_checkpointing = cfg.train.gradient_checkpointing if c.gradient_checkpointing is None else c.gradient_checkpointing
        if self.gradient_checkpointing:  # non-reentrant: exact with frozen inputs (LoRA), no enable_input_require_grads
            kw = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
            self.actor.gradient_checkpointing_enable(**kw)  # a shared-base critic's backbone is the actor's: covered
            for critic in self.critics.values():
                if isinstance(critic, ValueModel):
                    critic.backbone.gradient_checkpointing_enable(**kw)

        eos = self.actor.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.end_id = eos[0] if eos else self.tokenizer.eos_token_id  # what the SFT model ends a turn with
        self.eos_ids = torch.tensor(sorted({*eos, self.tokenizer.eos_token_id}), device=self.device)
        self.max_new_tokens = c.max_new_tokens or max(1, cfg.train.max_length - cfg.train.max_prompt_length)
        self.ptx = load_ptx(c.ptx_data) if c.ptx_data else None
        self.ptx_cursor = 0

    def make_critic(self, scorer: Any, policy_path: str, stream: str = "reward") -> nn.Module:
        """Upstream's critic is its score model read at every position; that needs a causal score model on the
        actor's vocabulary. Otherwise: the SFT backbone with a zero head. With `ppo_size=lora` the first is a frozen
        copy of the score model with LoRA adapters (its head trained), the second a LoRA adapter on the actor's own
        frozen base weights with a zero head (no copy at all)."""
        from harness.training.ppo import ValueModel

        model, tok = getattr(scorer, "model", None), getattr(scorer, "tokenizer", None)
        head = getattr(model, "score", None)
        lora = getattr(self, "lora", None)
        if isinstance(head, nn.Linear) and head.out_features == 1 and tok is not None and tok.get_vocab() == self.tokenizer.get_vocab():
            self.critic_init = "copy of the score model (backbone + head at every position), as upstream"
            critic = ValueModel.from_score_model(model)
            if lora:
                self.critic_init += "; LoRA on the copied backbone, head trained"
                critic.add_lora(*lora)
            return critic
        self.critic_init = "SFT policy backbone + zero head (the score model is not a causal model on the actor's vocabulary)"
        if lora:
            self.critic_init += "; a LoRA adapter on the actor's frozen base weights (shared, no copy)"
            return AdapterValueModel(self.actor, f"{stream}_critic", *lora)
        return ValueModel.from_policy(policy_path)

    def setup_optimizers(self, total_steps: int) -> None:
        """AdamW + schedule per trained network, all through `accelerator.prepare` (DDP, mixed precision)."""
        from transformers import get_scheduler

        c = self.config
        specs = {"actor": (self.actor, c.actor_lr, c.actor_weight_decay, c.actor_lr_scheduler, c.actor_warmup_ratio)}
        specs |= {name: (critic, c.critic_lr, c.critic_weight_decay, c.critic_lr_scheduler, 0.0) for name, critic in self.critics.items()}
        self.optim: dict[str, tuple[nn.Module, Any, Any]] = {}
        for key, (model, lr, wd, schedule, warmup) in specs.items():
            opt = torch.optim.AdamW(trainable_parameters(model), lr=lr, betas=tuple(c.adam_betas), weight_decay=wd)
            sched = get_scheduler(schedule, opt, num_warmup_steps=int(warmup * total_steps), num_training_steps=total_steps)
            self.optim[key] = self.accelerator.prepare(model, opt, sched)
        self.actor = self.optim["actor"][0]
        self.critics = {name: self.optim[name][0] for name in self.critics}

    def train_prompts(self, ctx: TrainContext) -> list[str]:
        """Unique prompts of the train fold (both pair kinds), this rank's share."""
        prompts = list(dict.fromkeys(p.prompt for p in [*ctx.reward_pairs, *ctx.cost_pairs]))
        return prompts[self.accelerator.process_index :: self.accelerator.num_processes]

    # -- 1. rollout -------------------------------------------------------------------------------------------------

    @no_grad
    def rollout(self, prompts: list[str]) -> Rollout:
        """Sample one response per prompt, score it with R and C, and record π_old, π_ref and V_old per token."""
        from harness.models import prompt_text

        tok = self.tokenizer
        enc = tok([prompt_text(tok, p, self.cfg) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        actor = self.accelerator.unwrap_model(self.actor)
        actor.eval()
        with self.accelerator.autocast():
            seq = actor.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=True, temperature=self.config.temperature,
                                 top_p=1.0, top_k=0, pad_token_id=tok.pad_token_id)
        prompt_len = enc["input_ids"].shape[1]
        response = seq[:, prompt_len:]
        mask = response_mask(response, self.eos_ids)  # up to and including the first EOS
        attention_mask = torch.cat([enc["attention_mask"], mask], dim=1)
        responses = [tok.decode(r[m.bool()], skip_special_tokens=True).strip() for r, m in zip(response, mask)]
        rewards = torch.tensor(self.reward_model.score(prompts, responses), dtype=torch.float32, device=self.device)
        costs = torch.tensor(self.cost_model.score(prompts, responses), dtype=torch.float32, device=self.device)
        ro = Rollout(prompts, responses, seq, attention_mask, position_ids=(attention_mask.cumsum(-1) - 1).clamp(min=0),
                     prompt_len=prompt_len, mask=mask, log_probs=torch.empty(0), ref_log_probs=torch.empty(0), rewards=rewards, costs=costs)
        with self.accelerator.autocast():
            ro.log_probs = response_log_probs(self.actor, ro)
            ro.ref_log_probs = response_log_probs(self.reference, ro)
            for name, critic in self.critics.items():
                critic.eval()
                ro.values[name] = critic_values(critic, ro)
        ro.end_scores = self.stream_scores(rewards, costs)
        return ro

    def stream_scores(self, rewards: torch.Tensor, costs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The end score each critic stream is paid at the last token: R to the reward stream, C to the cost stream."""
        return {"reward": rewards, "cost": costs}

    # -- 2. update λ ------------------------------------------------------------------------------------------------

    def update_penalty(self, step: int, cost_window_mean: float) -> float:
        """The λ of this RL step: one SGD step on log λ from the windowed mean episode cost, then the cap."""
        c = self.config
        if step >= c.lambda_update_delay_steps:
            self.log_lambda = lagrange_update(self.log_lambda, cost_window_mean, c.threshold, c.lambda_lr, c.lambda_max)
        return math.exp(self.log_lambda)

    # -- 3. advantages ----------------------------------------------------------------------------------------------

    @no_grad
    def compute_advantages(self, ro: Rollout, penalty: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Per critic stream: KL-shaped per-token rewards, then GAE; the actor gets the streams' combination."""
        c = self.config
        advantages, returns = {}, {}
        for name in self.critic_streams:
            stream = kl_shaped_rewards(ro.end_scores[name], ro.log_probs, ro.ref_log_probs, ro.mask, c.kl_coef, c.clip_range_score, stream=name)
            advantages[name], returns[name] = gae(stream, ro.values[name], ro.mask, c.gamma, c.gae_lambda)
        return self.actor_advantage(advantages, penalty), returns

    def actor_advantage(self, advantages: dict[str, torch.Tensor], penalty: float) -> torch.Tensor:
        """(A^R − λ·A^C)/(1 + λ)."""
        return mix_advantages(advantages["reward"], advantages["cost"], penalty)

    # -- 4. PPO step ------------------------------------------------------------------------------------------------

    def ppo_step(self, ro: Rollout, advantage: torch.Tensor, returns: dict[str, torch.Tensor]) -> dict[str, float]:
        """One clipped-surrogate step on the actor, then one clipped value step on each critic."""
        c = self.config
        self.actor.train()
        log_probs = response_log_probs(self.actor, ro)
        actor_loss = clipped_surrogate_loss(log_probs, ro.log_probs, advantage, ro.mask, c.clip_range_ratio)
        self.optimize("actor", actor_loss)
        stats = {"actor_loss": actor_loss.item(), "advantage_mean": masked_mean(advantage, ro.mask).item()}
        for name, critic in self.critics.items():
            critic.train()
            loss = clipped_value_loss(critic_values(critic, ro), ro.values[name], returns[name], ro.mask, c.clip_range_value)
            self.optimize(name, loss)
            stats[f"{name}_critic_loss"] = loss.item()
        return stats

    def optimize(self, key: str, loss: torch.Tensor, step_scheduler: bool = True) -> None:
        model, opt, sched = self.optim[key]
        opt.zero_grad()
        self.accelerator.backward(loss)
        if self.config.max_grad_norm > 0:  # over this optimiser's parameters (a shared base holds others' adapters)
            self.accelerator.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], self.config.max_grad_norm)
        opt.step()
        if step_scheduler:
            sched.step()

    def ptx_step(self, batch_size: int) -> float:
        """Supervised NLL on the response tokens of the next PTX examples, × ptx_coef, as its own actor step
        (upstream's order). The learning-rate schedule advances with RL steps only."""
        from harness.models import prompt_text

        tok = self.tokenizer
        rows = [self.ptx[(self.ptx_cursor + i) % len(self.ptx)] for i in range(batch_size)]
        self.ptx_cursor += batch_size
        seqs = []  # (prompt ids, response ids + end token)
        for prompt, response in rows:
            seqs.append((tok(prompt_text(tok, prompt, self.cfg), add_special_tokens=False)["input_ids"],
                         tok(response, add_special_tokens=False)["input_ids"][: self.max_new_tokens - 1] + [self.end_id]))
        width = max(len(p) + len(r) for p, r in seqs)
        rows_ids, rows_attn, rows_labels = [], [], []
        for p, r in seqs:  # left padding, as in rollouts
            pad = width - len(p) - len(r)
            rows_ids.append([tok.pad_token_id] * pad + p + r)
            rows_attn.append([0] * pad + [1] * (len(p) + len(r)))
            rows_labels.append([0] * (pad + len(p)) + [1] * len(r))
        input_ids, attention, labels = (torch.tensor(x, device=self.device) for x in (rows_ids, rows_attn, rows_labels))
        logits = self.actor(input_ids=input_ids, attention_mask=attention, position_ids=(attention.cumsum(-1) - 1).clamp(min=0),
                            use_cache=False).logits[:, :-1]
        loss = self.config.ptx_coef * masked_mean(-gather_log_probs(logits, input_ids[:, 1:]), labels[:, 1:])
        self.optimize("actor", loss, step_scheduler=False)
        return loss.item()

    # -- 5. save ----------------------------------------------------------------------------------------------------

    def save(self, ctx: TrainContext, steps: int, prompts: int, peak_rss: float) -> TrainResult:
        """Write the actor (+ tokenizer, + a bench_train.json record) to ctx.out_dir; account for every network."""
        from harness.io import save_model_atomic

        actor = self.accelerator.unwrap_model(self.actor)
        critics = [self.accelerator.unwrap_model(v) for v in self.critics.values()]
        score_models = [m for m in (getattr(s, "model", None) for s in (self.reward_model, self.cost_model)) if isinstance(m, nn.Module)]
        optimised = {key: sum(p.numel() for p in trainable_parameters(model)) for key, model in [("actor", actor), *zip(self.critics, critics)]}
        both = len(score_models) == 2  # R and C are networks here (not, e.g., remote scorers)
        extra = {
            "steps": steps, "train_prompts": prompts,
            "final_lambda": math.exp(self.log_lambda) if "cost" in self.critic_streams else None,
            "peak_rss_mb": round(peak_rss, 1),
            "cuda_max_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
            # parameters optimised (R and C count whole: trained before PPO) / held once each (shared weights once)
            "params_trained": sum(optimised.values()) + sum(map(n_params, score_models)) if both else None,
            "params_held": held_params(actor, self.reference, *critics, *score_models) if both else None,
            "params_optimised_ppo": optimised,
            "ppo_size": self.config.ppo_size, "lora_r_alpha": list(self.lora) if self.lora else None,
            "gradient_checkpointing": self.gradient_checkpointing, "frozen_dtype": self.frozen_dtype,
            "reference": "the actor with its LoRA adapters disabled (shared weights, exact)" if self.lora
                         else f"a separate frozen copy of the SFT model in {self.frozen_dtype}",
            "critic_init": self.critic_init, "score_backbone": self.config.score_backbone, "ptx": self.ptx is not None,
        }
        if self.lora:
            actor = merge_lora_actor(actor)
        if self.accelerator.is_main_process:
            save_model_atomic(actor, self.tokenizer, ctx.out_dir, {"method": self.name, "config": asdict(self.config), **extra})
        self.accelerator.wait_for_everyone()
        held = ["actor", "reference", "reward_model", "cost_model", *(f"{name}_critic" for name in self.critic_streams)]
        return TrainResult(model_path=str(ctx.out_dir), models_trained=2 + 1 + len(self.critic_streams), networks_held=held, extra=extra)

