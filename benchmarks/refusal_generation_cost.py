"""Cost of the over-refusal generation on the cpu profile: SmolLM2-135M-Instruct, greedy, 64 new tokens, batch 16.

Generates for the first N prompts of the fixed hashed order of XSTest's 250 safe prompts (no generation cache) and
prints seconds per prompt and the projection to all 250 and to the cpu profile's subset. The figures and the choice
they support are in configs/cpu.yaml (data.max_refusal_prompts) and README "Reading the results".

    BENCH_DATA_DIR=../shared/data HF_HUB_OFFLINE=1 python benchmarks/refusal_generation_cost.py --n 32
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args()

    import torch

    from harness.config import load_config
    from harness.datasets.prompt_sets import load_xstest_safe
    from harness.generation import make_generator
    from harness.models import resolve_model
    from harness.types import SamplingParams

    cfg = load_config(args.profile, ["data.max_refusal_prompts=0"])
    prompts = [p.prompt for p in sorted(load_xstest_safe(cfg), key=lambda p: __import__("hashlib").sha1(p.prompt.encode()).hexdigest())][: args.n]
    g = cfg.generation
    gen = make_generator(resolve_model(cfg.model), backend="hf", template=cfg.template, batch_size=g.batch_size, device="cpu")
    params = SamplingParams(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, seed=0)
    start, cpu0 = time.perf_counter(), time.process_time()
    out = gen.generate(prompts, params)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    per = wall / len(prompts)
    # on a shared machine the wall time measures the other processes too; CPU seconds / threads is the free-cores wall
    print(f"{len(out)} XSTest safe prompts, {g.max_new_tokens} new tokens, batch {g.batch_size}, {torch.get_num_threads()} threads: "
          f"{wall:.1f} s wall ({per:.2f} s/prompt), {cpu:.1f} CPU-s ({cpu / len(prompts):.2f} CPU-s/prompt); "
          f"all 250: ~{250 * per / 60:.1f} min per run; "
          f"cpu subset of {load_config(args.profile).data.max_refusal_prompts or 250}: "
          f"~{(load_config(args.profile).data.max_refusal_prompts or 250) * per / 60:.1f} min per run")


if __name__ == "__main__":
    main()
