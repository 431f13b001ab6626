"""Is bf16 accurate enough for Safe-RLHF's frozen networks? fp32 vs bf16 on the same real rows, in one process.

- R and C: the cpu profile's score-model architecture (MiniLM + scalar head, `score_backbone=minilm`), here the
  cached evaluation scorers `minilm-reward` / `minilm-cost` (the PPO trains its own on its train split; same
  architecture and loss). Scores of every (prompt, chosen) and (prompt, rejected) row of `--pairs` real PKU-SafeRLHF
  cost pairs (train fold), each in fp32 and with the model cast to bf16.
- The reference (ppo_size=full keeps a frozen copy): SmolLM2-135M log-probs of the first `--tokens` response tokens
  (the cpu profile's 32 new tokens) after the formatted prompt (≤ 64 tokens), fp32 vs the model in bf16.

Tolerance, fixed before measuring: bf16 is used where (R, C) max |Δscore| ≤ 5% of the fp32 scores' standard
deviation and no row changes C's sign (the unsafe decision), and (reference) the mean per-response |Σ_t Δ log π|
≤ 0.01 nats, since that sum enters the KL shaping of every response (β·Σ_t k_t) as a bias. Prints the errors,
the verdicts and the bf16 ÷ fp32 time.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from scipy.stats import spearmanr

from common import cfg_for, result


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def score_errors(scorer, prompts: list[str], responses: list[str], kind: str) -> dict:
    scorer.use_cache = False
    fp32, t32 = timed(lambda: np.asarray(scorer.score(prompts, responses)))
    scorer.model = copy.deepcopy(scorer.model).to(torch.bfloat16)
    bf16, t16 = timed(lambda: np.asarray(scorer.score(prompts, responses)))
    d = np.abs(bf16 - fp32)
    n = len(fp32) // 2  # rows: chosen responses, then rejected
    out = {"rows": len(fp32), "max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()), "fp32_std": float(fp32.std()),
           "max_over_std": float(d.max() / fp32.std()), "spearman": float(spearmanr(fp32, bf16)[0]),
           "sign_flips": int(((fp32 > 0) != (bf16 > 0)).sum()),
           "pair_order_flips": int(((fp32[:n] > fp32[n:]) != (bf16[:n] > bf16[n:])).sum()), "bf16_over_fp32_time": t16 / t32}
    out["accurate"] = out["max_over_std"] <= 0.05 and (kind != "cost" or out["sign_flips"] == 0)
    return out


def reference_errors(cfg, prompts: list[str], responses: list[str], tokens: int, batch: int) -> dict:
    from transformers import AutoModelForCausalLM

    from harness.models import load_tokenizer, prompt_text, resolve_model
    from harness.training.rl_math import gather_log_probs

    path = str(resolve_model(cfg.model))
    tok = load_tokenizer(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    rows = []
    for p, r in zip(prompts, responses):
        pid = tok(prompt_text(tok, p, cfg), add_special_tokens=False)["input_ids"]
        rid = tok(r, add_special_tokens=False)["input_ids"][:tokens]
        rows.append((pid, rid))

    @torch.no_grad()
    def logps(m) -> list[torch.Tensor]:
        out = []
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            width = max(len(p) + len(r) for p, r in chunk)
            ids = torch.full((len(chunk), width), tok.pad_token_id)
            attn = torch.zeros_like(ids)
            for j, (p, r) in enumerate(chunk):  # left padding, as in rollouts
                ids[j, width - len(p) - len(r) :] = torch.tensor(p + r)
                attn[j, width - len(p) - len(r) :] = 1
            logits = m(input_ids=ids, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0), use_cache=False).logits
            lp = gather_log_probs(logits[:, :-1], ids[:, 1:])
            out += [lp[j, width - 1 - len(r) :] for j, (_, r) in enumerate(chunk)]  # the response tokens' log-probs
        return out

    fp32, t32 = timed(lambda: logps(model))
    bf16, t16 = timed(lambda: logps(model.to(torch.bfloat16)))
    tok_d = torch.cat([(a - b).abs() for a, b in zip(fp32, bf16)])
    seq_d = torch.tensor([(b - a).sum().abs().item() for a, b in zip(fp32, bf16)])
    out = {"responses": len(rows), "tokens": int(tok_d.numel()), "token_mean_abs_diff": tok_d.mean().item(), "token_max_abs_diff": tok_d.max().item(),
           "seq_sum_mean_abs_diff": seq_d.mean().item(), "seq_sum_max_abs_diff": seq_d.max().item(), "bf16_over_fp32_time": t16 / t32}
    out["accurate"] = out["seq_sum_mean_abs_diff"] <= 0.01
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    from evaluators.score_models import minilm_cost, minilm_reward
    from harness.datasets import load_bundle

    cfg = cfg_for()
    pairs = [p for p in load_bundle(cfg).cost_pairs["train"] if p.chosen.strip() and p.rejected.strip()][: a.pairs]
    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    out = {"R (minilm-reward)": score_errors(minilm_reward(cfg), prompts, responses, "reward"),
           "C (minilm-cost)": score_errors(minilm_cost(cfg), prompts, responses, "cost"),
           "reference (SmolLM2-135M)": reference_errors(cfg, prompts, responses, a.tokens, a.batch)}
    for name, r in out.items():
        print(f"{name}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
    result("ppo_frozen_bf16", **out)


if __name__ == "__main__":
    main()
