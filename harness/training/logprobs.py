"""Log-probabilities and features of (prompt, response) pairs outside training, tokenised exactly as `harness.training.dpo`'s
`train_dpo` (TRL 1.16) tokenises them: the prompt formatted and cut by `harness.models.prompt_text`, EOS appended,
`keep_start` truncation at `train.max_length`.

Used for KL(π_k‖π_r̂) estimates (PD-DPO), PeCAN's log-ratios and online PD-DPO's features φ(x, y). Every function
takes a saved model folder (loaded as float32, then released) or an in-memory model (used as it is).

**Chunked LM head.** Log-probs here, and in the DPO and KTO trainers (`ChunkedHeadMixin`), come from the model's
backbone hidden states through `harness.training.losses.chunked_token_logps`: only the scored (response) positions
reach the LM head, `LOGP_CHUNK_TOKENS` at a time, so the (batch, length, vocabulary) logits are never built. TRL
1.16 has a fused head of its own (`trl.trainer.utils.add_fused_lm_head`), but off CUDA it projects every position,
prompt and padding included, in 4,096-token × 32,768-vocabulary fp32 tiles (512 MB each, several alive at once), which
is the train step's peak on the cpu profile. `train.chunked_logps=false` keeps TRL's head (and the full logits here).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from harness.training.losses import LOGP_CHUNK_TOKENS, chunked_token_logps, sequence_logps
from harness.models import load_causal_lm, load_tokenizer, prompt_text, release_memory

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.types import PreferencePair

__all__ = ["ChunkedHeadMixin", "add_chunked_lm_head", "completion_ids", "model_sequence_logps", "policy_logps",
           "response_features", "scoring_batches", "sequence_logprobs"]

# Config fields that rescale or cap the logits (TRL's fused head reads the same ones): a head with any of them is not
# `hidden @ W.T + b`, so the chunked path refuses it and the caller keeps the model's own head.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


# -- the chunked LM head ------------------------------------------------------------------------------------------


def plain_lm_head(model: Any) -> bool:
    """True when the model's logits are exactly `lm_head(hidden)` (no scaling, soft-capping or MoE router loss)."""
    text = model.config.get_text_config()
    return (all(getattr(text, k, None) in (None, 1, 1.0) for k in _LOGIT_TRANSFORMS)
            and not getattr(text, "output_router_logits", False) and model.get_output_embeddings() is not None)


def model_sequence_logps(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, mask: torch.Tensor,
                         chunk: int | None = LOGP_CHUNK_TOKENS, **forward_kwargs: Any) -> torch.Tensor:
    """`sequence_logps(model(...).logits, input_ids, mask)` (B,) fp32, computed from the backbone's hidden states and
    the chunked head (`chunk` tokens per tile); `chunk=None`, or a head that is not plain, takes the full logits."""
    if chunk is None or not plain_lm_head(model):
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **forward_kwargs)
        return sequence_logps(out.logits, input_ids, mask)
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **forward_kwargs).last_hidden_state
    head = model.get_output_embeddings()
    logp = chunked_token_logps(hidden[:, :-1], head.weight, head.bias, input_ids[:, 1:], mask[:, 1:], chunk)[0]
    return logp.sum(-1)


def add_chunked_lm_head(model: Any, chunk: int = LOGP_CHUNK_TOKENS, stats: bool = True) -> bool:
    """Make `model(..., labels=, fused_lm_head=True)`, the call TRL 1.16's DPO and KTO trainers score with, run the
    chunked head over the labelled positions only; every other call goes to the forward it had (TRL's patch, then
    the model's own). Returns False, leaving the model as it was, for a head that is not plain (`plain_lm_head`).
    Patch the model PEFT wraps, as TRL does; patching twice is a no-op."""
    if getattr(model, "_bench_chunked_head", None) == chunk:
        return True
    if not plain_lm_head(model):
        return False
    import functools
    import types

    from trl.trainer.utils import FusedCausalLMOutput

    previous = model.forward

    @functools.wraps(type(model).forward)  # `generate` checks its kwargs against the original signature
    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        if not fused_lm_head:
            extra = {k: v for k, v in (("labels", labels), ("shift_labels", shift_labels),
                                        ("num_items_in_batch", num_items_in_batch)) if v is not None}
            return previous(*args, **kwargs, **extra)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state  # (B, T, H)
        if shift_labels is None:
            hidden, targets = hidden[:, :-1], labels[:, 1:]
        else:
            targets = shift_labels
        head = self.get_output_embeddings()
        keep = targets != -100
        logp, entropy, mean_logit, top1 = chunked_token_logps(hidden.to(head.weight.device), head.weight, head.bias,
                                                              targets.to(head.weight.device), keep, chunk, stats)
        loss = -logp.sum() / (keep.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
        return FusedCausalLMOutput(loss=loss, log_probs=logp, entropy=entropy, mean_logits=mean_logit, is_top1=top1,
                                   label_mask=keep)

    model.forward = types.MethodType(forward, model)
    model._bench_chunked_head = chunk
    return True


class ChunkedHeadMixin:
    """For TRL 1.16 trainers that score through a fused LM head (`DPOTrainer`, `KTOTrainer`): swap in
    `add_chunked_lm_head` on the policy (and an explicit reference) before the reference log-probs are precomputed
    (`_precompute_ref_logps` runs inside TRL's `__init__`, after TRL patched its own head) and again after `__init__`.
    `chunked_logps=None` keeps TRL's head. Put it first among the bases."""

    def __init__(self, *args: Any, chunked_logps: int | None = LOGP_CHUNK_TOKENS, **kwargs: Any):
        self.chunked_logps = chunked_logps
        super().__init__(*args, **kwargs)
        self.chunked_head = self._install_chunked_head()

    def _install_chunked_head(self) -> bool:
        if self.chunked_logps is None:
            return False
        from peft import PeftModel

        policy = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
        ok = add_chunked_lm_head(policy, self.chunked_logps)
        if getattr(self, "ref_model", None) is not None:
            ok = add_chunked_lm_head(self.accelerator.unwrap_model(self.ref_model), self.chunked_logps, stats=False) and ok
        return ok

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        self._install_chunked_head()
        return super()._precompute_ref_logps(dataset, name, batch_size)



def completion_ids(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) exactly as TRL 1.16 tokenises a non-conversational pair: EOS appended, the
    completion starting where the tokenised prompt and prompt+completion diverge."""
    eos = tokenizer.eos_token
    if not completion.endswith(eos):
        completion = completion + eos
    p = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + completion)["input_ids"]
    n = 0
    while n < min(len(p), len(full)) and p[n] == full[n]:
        n += 1
    return full[:n], full[n:]


def loaded(model_or_path: Any, tokenizer: Any, device: str | None) -> tuple[Any, Any, bool]:
    """(model, tokenizer, owned): load a saved folder onto `device`, or use an in-memory model as it is."""
    if isinstance(model_or_path, (str, Path)):
        model = load_causal_lm(model_or_path, device or "cpu").to(device or "cpu")
        return model, tokenizer or load_tokenizer(model_or_path), True
    return model_or_path, tokenizer or load_tokenizer(model_or_path.config._name_or_path), False


def scoring_batches(tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], cfg: "RunConfig", batch_size: int,
                     device: Any):
    """Right-padded (input_ids, attention_mask, completion_mask) batches, formatted and truncated as `train_dpo`
    does (TRL tokenisation, keep_start truncation at train.max_length)."""
    limit = cfg.train.max_length
    for i in range(0, len(prompts), batch_size):
        ids, masks = [], []
        for prompt, response in zip(prompts[i : i + batch_size], responses[i : i + batch_size]):
            p, c = completion_ids(tokenizer, prompt_text(tokenizer, prompt, cfg), response)
            ids.append((p + c)[:limit])
            masks.append(([0] * len(p) + [1] * len(c))[:limit])
        width = max(len(x) for x in ids)
        pad = tokenizer.pad_token_id
        yield (torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=device),
               torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device),
               torch.tensor([m + [0] * (width - len(m)) for m in masks], device=device))


@torch.no_grad()
def sequence_logprobs(model_or_path: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], cfg: "RunConfig",
                      device: str | None = None, batch_size: int | None = None) -> torch.Tensor:
    """log π(y|x) summed over response tokens (EOS included) for raw prompts, formatted and truncated exactly as
    `train_dpo` does; float32 on CPU. Used for KL(π_k‖π_r̂) estimates and PeCAN's log-ratios."""
    model, tokenizer, owned = loaded(model_or_path, tokenizer, device)
    was_training = model.training
    model.eval()
    out = [model_sequence_logps(model, ids, attn, mask, LOGP_CHUNK_TOKENS if cfg.train.chunked_logps else None).float().cpu()
           for ids, attn, mask in scoring_batches(tokenizer, prompts, responses, cfg, batch_size or 2 * cfg.train.batch_size,
                                                   next(model.parameters()).device)]
    model.train(was_training)
    if owned:
        del model
        release_memory()
    return torch.cat(out) if out else torch.zeros(0)


@torch.no_grad()
def response_features(model_or_path: Any, tokenizer: Any, prompts: Sequence[str], responses: Sequence[str], cfg: "RunConfig",
                      device: str | None = None, batch_size: int | None = None) -> torch.Tensor:
    """φ(x, y): the final hidden state mean-pooled over the (prompt + response) tokens, L2-normalised so the ridge
    κ and bonus scale α do not depend on the model's activation scale [ours]. (N, hidden) float32 on CPU."""
    model, tokenizer, owned = loaded(model_or_path, tokenizer, device)
    model.eval()
    out = []
    for ids, attn, _ in scoring_batches(tokenizer, prompts, responses, cfg, batch_size or 2 * cfg.train.batch_size,
                                         next(model.parameters()).device):
        hidden = model(input_ids=ids, attention_mask=attn, output_hidden_states=True, use_cache=False).hidden_states[-1].float()
        pooled = (hidden * attn.unsqueeze(-1)).sum(1) / attn.sum(1, keepdim=True)
        out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
    if owned:
        del model
        release_memory()
    return torch.cat(out) if out else torch.zeros(0)


def policy_logps(model_or_path: Any, tokenizer: Any, pairs: Sequence["PreferencePair"], cfg: "RunConfig",
                 device: str | None = None, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log π(chosen|x), log π(rejected|x)) per pair, tokenised as `train_dpo` tokenises them (all pairs, in order)."""
    model, tokenizer, owned = loaded(model_or_path, tokenizer, device)
    prompts = [p.prompt for p in pairs]
    chosen = sequence_logprobs(model, tokenizer, prompts, [p.chosen for p in pairs], cfg, device, batch_size)
    rejected = sequence_logprobs(model, tokenizer, prompts, [p.rejected for p in pairs], cfg, device, batch_size)
    if owned:
        del model
        release_memory()
    return chosen, rejected
