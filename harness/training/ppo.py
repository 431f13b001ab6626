"""The PPO family's shared pieces (Safe-RLHF's PPO-Lagrangian in `methods/safe_rlhf.py`, reward shaping in
`methods/ppo_shaping.py`): the per-token critic `ValueModel`, the `Rollout` batch, log-probs and values read from
a rollout, the prompt batcher and the PTX loader. The PPO math itself (GAE, clipped losses, the Lagrange update)
is `harness/training/rl_math.py`.

PPO at a practical size (`ppo_size="lora"`, docs/memory.md): the actor is the SFT model with LoRA adapters
(`lora_actor`); the reference is that same model with its adapters disabled (`SharedReference`: the SFT weights
exactly, no second copy); each critic that starts from the SFT backbone is another LoRA adapter on the actor's
frozen base weights plus its own value head (`AdapterValueModel`), so one set of base weights serves four networks.

Upstream (read, not copied): PKU-Alignment/safe-rlhf@82743cc `safe_rlhf/trainers/rl_trainer.py`,
`safe_rlhf/models/score_model`.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import psutil
import torch
from torch import nn

from harness.errors import DataError
from harness.training.rl_math import gather_log_probs

__all__ = ["ACTOR_ADAPTER", "AdapterValueModel", "Rollout", "SharedReference", "ValueModel", "adapter_parameters", "critic_values",
           "held_params", "load_ptx", "lora_actor", "merge_lora_actor", "lora_config", "n_params", "prompt_batches", "response_log_probs", "rss_mb",
           "trainable_parameters"]


# -- networks and rollouts -------------------------------------------------------------------------------------------------------


class ValueModel(nn.Module):
    """A causal backbone with a linear `hidden → 1` head at every position: Safe-RLHF's score-model shape, used as
    a critic. Built from a trained score model (upstream) or from the SFT backbone with a zero head (V = 0 at first)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_policy(cls, path: str | Path) -> "ValueModel":
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(str(path), dtype=torch.float32))  # the LM without its LM head

    @classmethod
    def from_score_model(cls, model: nn.Module) -> "ValueModel":
        """A trainable copy of a decoder score model (`base_model` + `score` head), read at every position."""
        critic = cls(copy.deepcopy(model.base_model))
        with torch.no_grad():
            critic.head.weight.copy_(model.score.weight)
            if model.score.bias is not None:
                critic.head.bias.copy_(model.score.bias)
        return critic.float().requires_grad_(True)

    def add_lora(self, r: int, alpha: int) -> "ValueModel":
        """Freeze the backbone and train LoRA adapters on its linear layers instead (the head stays trainable)."""
        from peft import get_peft_model

        self.backbone = get_peft_model(self.backbone, lora_config(r, alpha))
        self.head.requires_grad_(True)
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).last_hidden_state
        return self.head(hidden).squeeze(-1).float()  # (B, T)


# -- PPO at a practical size: LoRA adapters on one set of shared base weights ----------------------------------------

ACTOR_ADAPTER = "default"  # peft's name for a model's first adapter


def lora_config(r: int, alpha: int, target_modules: Any = "all-linear") -> Any:
    """LoRA on every linear layer, without dropout: the PPO ratio π_θ/π_old must be exactly 1 before the first update
    (the rollout runs in eval mode, the update in train mode)."""
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=target_modules, bias="none")


def lora_actor(model: nn.Module, r: int, alpha: int) -> Any:
    """The SFT model with trainable LoRA adapters (the base frozen). A forward pre-hook on the causal LM makes the
    actor's adapter the active one whenever the actor runs (forward, `generate`): the critics' adapters live on the
    same base weights and switch it while they run (`AdapterValueModel`)."""
    from peft import get_peft_model

    actor = get_peft_model(model, lora_config(r, alpha))

    def activate(module: nn.Module, args: Any) -> None:
        if actor.active_adapter != ACTOR_ADAPTER:
            actor.set_adapter(ACTOR_ADAPTER)

    actor.bench_adapter_hook = actor.get_base_model().register_forward_pre_hook(activate)  # removed by `merge_lora_actor`
    return actor


def merge_lora_actor(actor: Any) -> nn.Module:
    """The trained actor as a plain model: the critics' adapters deleted, the actor's merged into the base weights."""
    actor.set_adapter(ACTOR_ADAPTER)
    for name in [n for n in actor.peft_config if n != ACTOR_ADAPTER]:
        actor.delete_adapter(name)
    actor.bench_adapter_hook.remove()
    return actor.merge_and_unload()


def adapter_parameters(peft_model: nn.Module, adapter: str) -> list[nn.Parameter]:
    """The parameters of one named adapter (`...lora_A.<adapter>.weight`), whatever is active now."""
    return [p for name, p in peft_model.named_parameters() if f".{adapter}." in name]


class SharedReference(nn.Module):
    """π_ref as the LoRA actor with its adapters disabled (peft's `disable_adapter()`): the frozen base weights are
    the SFT weights, so this is the SFT model exactly, with no second copy. Holds no parameters of its own."""

    def __init__(self, actor: nn.Module):
        super().__init__()
        self._actor = [actor]  # a list, not a submodule: the weights are the actor's

    def forward(self, **kwargs: Any) -> Any:
        actor = self._actor[0]
        with actor.disable_adapter():
            return actor(**kwargs)


class AdapterValueModel(nn.Module):
    """A critic on the LoRA actor's frozen base weights: its own LoRA adapter (named after its stream) on the same
    linear layers as the actor's, and a zero-initialised linear value head, so V = 0 at first, as
    `ValueModel.from_policy` (the SFT backbone with a zero head), without a copy of the backbone.

    Running it makes its adapter the active one and leaves it so, so that a gradient-checkpointed backward pass
    recomputes with the same adapter; the actor's forward hook (`lora_actor`) switches back."""

    def __init__(self, actor: nn.Module, adapter: str, r: int, alpha: int):
        super().__init__()
        targets = actor.peft_config[ACTOR_ADAPTER].target_modules  # "all-linear" as resolved for the actor
        actor.add_adapter(adapter, lora_config(r, alpha, target_modules=sorted(targets)))
        self._actor = [actor]  # a list, not a submodule: the base weights and the other adapters are the actor's
        self.adapter = adapter
        self.head = nn.Linear(actor.get_base_model().config.hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*adapter_parameters(self._actor[0], self.adapter), *self.head.parameters()]

    def train(self, mode: bool = True) -> "AdapterValueModel":
        super().train(mode)
        self._actor[0].train(mode)  # the shared backbone (gradient checkpointing runs in train mode only)
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        actor = self._actor[0]
        if actor.active_adapter != self.adapter:
            actor.set_adapter(self.adapter)
        backbone = actor.get_base_model().base_model  # the decoder without its LM head, LoRA layers in place
        hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).last_hidden_state
        return self.head(hidden).squeeze(-1).float()  # (B, T)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What one network's optimiser updates: a shared-base critic's adapter and head, a LoRA actor's adapter (by
    name: the critics switch `requires_grad` of the actor's adapter off while they run), else every parameter that
    requires a gradient."""
    if hasattr(model, "trainable_parameters"):
        return model.trainable_parameters()
    if hasattr(model, "peft_config") and ACTOR_ADAPTER in model.peft_config:
        return adapter_parameters(model, ACTOR_ADAPTER)
    return [p for p in model.parameters() if p.requires_grad]


def held_params(*models: nn.Module) -> int:
    """Parameters held in memory by these networks together, each tensor counted once (shared weights once)."""
    return sum({id(p): p.numel() for model in models for p in model.parameters()}.values())


@dataclass
class Rollout:
    """One batch of sampled responses and everything PPO needs from rollout time (all tensors detached)."""

    prompts: list[str]
    responses: list[str]
    input_ids: torch.Tensor  # (B, P + L): left-padded prompt, then the response (padding after EOS)
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    prompt_len: int  # P
    mask: torch.Tensor  # (B, L): 1 on response tokens up to and including EOS
    log_probs: torch.Tensor  # (B, L): log π_old(a_t|s_t), the actor at rollout time
    ref_log_probs: torch.Tensor  # (B, L)
    rewards: torch.Tensor  # (B,): R(x, y)
    costs: torch.Tensor  # (B,): C(x, y), raw (no KL)
    end_scores: dict[str, torch.Tensor] = field(default_factory=dict)  # per critic stream
    values: dict[str, torch.Tensor] = field(default_factory=dict)  # per critic: V_old(s_t), (B, L)


def response_log_probs(model: nn.Module, ro: Rollout) -> torch.Tensor:
    """(B, L) log-probs of the response tokens; only the last L+1 positions' logits are materialised."""
    length = ro.mask.shape[1]
    logits = model(input_ids=ro.input_ids, attention_mask=ro.attention_mask, position_ids=ro.position_ids,
                   logits_to_keep=length + 1, use_cache=False).logits[:, :-1]
    return gather_log_probs(logits, ro.input_ids[:, ro.prompt_len :])


def critic_values(critic: nn.Module, ro: Rollout) -> torch.Tensor:
    """(B, L) values V(s_t) of the states before each response token (positions P−1 … P+L−2)."""
    return critic(ro.input_ids, ro.attention_mask, ro.position_ids)[:, ro.prompt_len - 1 : -1]


def prompt_batches(prompts: list[str], batch_size: int, num_batches: int, seed: int) -> Iterator[list[str]]:
    """`num_batches` batches, reshuffling at every pass over the prompts (upstream: a shuffled dataloader)."""
    rng, order = random.Random(seed), []
    for _ in range(num_batches):
        while len(order) < batch_size:  # fewer prompts than a batch: a batch may repeat a prompt
            perm = list(prompts)
            rng.shuffle(perm)
            order.extend(perm)
        yield order[:batch_size]
        del order[:batch_size]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_ptx(path: str) -> list[tuple[str, str]]:
    """PTX examples from a JSONL file of {"prompt": ..., "response": ...} rows."""
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if line.strip():
            row = json.loads(line)
            if not isinstance(row.get("prompt"), str) or not isinstance(row.get("response"), str):
                raise DataError("PTX rows need string fields 'prompt' and 'response'", file=path, row=i)
            rows.append((row["prompt"], row["response"]))
    if not rows:
        raise DataError("the PTX file has no rows", file=path, fix="set methods.<method>.ptx_data='' to turn PTX off")
    return rows
