"""The PPO family's shared pieces (Safe-RLHF's PPO-Lagrangian in `methods/safe_rlhf.py`, reward shaping in
`methods/ppo_shaping.py`): the per-token critic `ValueModel`, the `Rollout` batch, log-probs and values read from
a rollout, the prompt batcher and the PTX loader. The PPO math itself (GAE, clipped losses, the Lagrange update)
is `harness/rl_math.py`.

Upstream (read, not copied): PKU-Alignment/safe-rlhf@82743cc `safe_rlhf/trainers/rl_trainer.py`,
`safe_rlhf/models/score_model`.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil
import torch
from torch import nn

from harness.errors import DataError
from harness.rl_math import gather_log_probs

__all__ = ["Rollout", "ValueModel", "critic_values", "load_ptx", "n_params", "prompt_batches", "response_log_probs", "rss_mb"]


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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False).last_hidden_state
        return self.head(hidden).squeeze(-1).float()  # (B, T)


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
