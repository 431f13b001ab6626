"""P4: achieved FLOP/s of a DPO step ÷ this machine's measured matmul peak, in fp32 and bf16 autocast. Target >= 0.6.

FLOPs of one harness DPO step (forward + backward, SmolLM2-135M, LoRA, cpu-profile batch) are counted by
`torch.utils.flop_counter.FlopCounterMode` (matmuls and attention, what the model really ran); the step is then
timed without the counter. The peak is the best of several large square `torch.mm` calls in the same dtype, in the
same process, on all threads. The bf16 run uses `torch.autocast("cpu", bfloat16)` over the same step; its DPO loss
is compared with the fp32 loss on the same batch and weights.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import cfg_for, first_batch, harness_trainer, long_pairs, policy_path, result, step_args


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def main() -> None:
    a = step_args(__doc__, steps=3)
    from torch.utils.flop_counter import FlopCounterMode

    from harness.models import load_tokenizer

    cfg = cfg_for(a.seq_len, a.batch)
    trainer = harness_trainer(cfg, long_pairs(a.batch, load_tokenizer(policy_path()), a.seq_len))
    batch = first_batch(trainer)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); training_step reads it
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        def step() -> float:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                loss = trainer.training_step(trainer.model, dict(batch))
            trainer.model.zero_grad(set_to_none=True)
            return float(loss)

        counter = FlopCounterMode(display=False)
        with counter:
            loss = step()
        flops = counter.get_total_flops()
        times = []
        for _ in range(a.steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        sec = statistics.median(times)
        peak = matmul_peak(dtype)
        out[name] = {"flops_per_step": flops, "s_per_step": sec, "achieved_flops": flops / sec, "peak_flops": peak,
                     "ratio": flops / sec / peak, "loss": loss}
        print(f"{name}: {flops / 1e9:.1f} GFLOP/step in {sec:.2f} s = {flops / sec / 1e9:.1f} GFLOP/s; matmul peak "
              f"{peak / 1e9:.1f} GFLOP/s; ratio {flops / sec / peak:.3f} (target >= 0.6); loss {loss:.6f}")
    diff = abs(out["bf16"]["loss"] - out["fp32"]["loss"])
    speed = out["fp32"]["s_per_step"] / out["bf16"]["s_per_step"]
    print(f"bf16 autocast: {speed:.2f}x the fp32 step speed, |loss difference| {diff:.2e}")
    result("P4", ratio_fp32=out["fp32"]["ratio"], ratio_bf16=out["bf16"]["ratio"], target=">= 0.6",
           met=min(out["fp32"]["ratio"], out["bf16"]["ratio"]) >= 0.6, bf16_speedup=speed, bf16_loss_abs_diff=diff, detail=out,
           seq_len=a.seq_len, batch=a.batch)


if __name__ == "__main__":
    main()
