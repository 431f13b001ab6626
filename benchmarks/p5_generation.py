"""P5: batched ÷ one-by-one HF generation, in generated tokens per second. Target >= 5. (vLLM ÷ HF on GPU.)

The harness's `HFGenerator` (left-padded batches, greedy) on SmolLM2-135M and real PKU-SafeRLHF eval prompts:
the same prompts once with the profile's batch size, once with batch size 1. Tokens = the generated tokens of each
response (re-tokenised, EOS not counted), summed.
"""

from __future__ import annotations

import argparse
import time

from common import policy_path, result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    a = ap.parse_args()
    from common import cfg_for
    from harness.datasets import load_bundle, load_eval_prompts
    from harness.generation import HFGenerator
    from harness.types import SamplingParams

    cfg = cfg_for()
    _, prompts = load_eval_prompts(cfg, load_bundle(cfg))
    texts = [p.prompt for p in prompts[: a.prompts]]
    gen = HFGenerator(policy_path(), batch_size=a.batch)
    params = SamplingParams(max_new_tokens=a.max_new_tokens, temperature=0.0, top_p=1.0, seed=0)
    gen.generate(texts[:2], params)  # warm-up
    rates = {}
    for name, bs in (("batched", a.batch), ("one_by_one", 1)):
        gen.batch_size = bs
        start = time.perf_counter()
        outs = gen.generate(texts, params)
        sec = time.perf_counter() - start
        tokens = sum(len(gen.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outs)
        rates[name] = tokens / sec
        print(f"{name:10s} batch {bs:2d}: {tokens} tokens in {sec:.1f} s = {tokens / sec:.1f} tokens/s")
    r = rates["batched"] / rates["one_by_one"]
    print(f"P5 batched/one-by-one = {r:.2f}; target >= 5")
    result("P5", ratio=r, target=">= 5", met=r >= 5, tokens_per_s=rates, prompts=a.prompts, batch=a.batch, max_new_tokens=a.max_new_tokens)


if __name__ == "__main__":
    main()
