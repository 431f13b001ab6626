"""Log-probabilities and features of (prompt, response) pairs outside training, tokenised exactly as `harness.training.dpo`'s
`train_dpo` (TRL 1.16) tokenises them: the prompt formatted and cut by `harness.models.prompt_text`, EOS appended,
`keep_start` truncation at `train.max_length`.

Used for KL(π_k‖π_r̂) estimates (PD-DPO), PeCAN's log-ratios and online PD-DPO's features φ(x, y). Every function
takes a saved model folder (loaded as float32, then released) or an in-memory model (used as it is).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from harness.training.losses import sequence_logps
from harness.models import load_causal_lm, load_tokenizer, prompt_text, release_memory

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.types import PreferencePair

__all__ = ["completion_ids", "policy_logps", "response_features", "scoring_batches", "sequence_logprobs"]



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
    out = [sequence_logps(model(input_ids=ids, attention_mask=attn, use_cache=False).logits, ids, mask).float().cpu()
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
