"""P3: PD-DPO peak memory ÷ Safe-RLHF peak memory, same policy, same measurement. Target <= 0.4. Measured both ways:
against full PPO (upstream Safe-RLHF, what the paper's memory claim compares against) and against LoRA PPO
(`methods.safe-rlhf.ppo_size=lora`: LoRA actor and critics on one set of frozen base weights, the reference = the
actor with its adapters disabled), plus LoRA PPO with gradient checkpointing. Also prints full vs LoRA side by side:
peak RSS and seconds per rollout and per PPO step.

Each train stage runs in its own fresh process (`benchmarks/train_stage.py --no-reuse`: nothing answered from the
training store) on the cpu profile, shortened where peak memory does not depend on it (16 pairs per preference set,
8 dual prompts, one PD-DPO iteration, two Safe-RLHF rollout batches of the profile's 4 prompts × 32 new tokens). The
peak is the stage's sampled RSS (harness.monitor), the figure every run records; the Safe-RLHF phases
(`safe-rlhf/score_models`, `/load`, `/rollout`, `/ppo_step`) show where it is reached. Step times are the phases'
mean wall time per call, measured one process after the other on a shared machine: read them as rough.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import result

HERE = Path(__file__).resolve().parent
SHORT = ["data.max_train_pairs=16", "data.max_dual_prompts=8", "data.max_scorer_pairs=0"]
PPO = "methods.safe-rlhf."
VARIANTS = {  # name: (method, overrides)
    "safe-rlhf full": ("safe-rlhf", [f"{PPO}num_rollout_batches=2", f"{PPO}ppo_size=full", f"{PPO}gradient_checkpointing=false"]),
    "safe-rlhf lora": ("safe-rlhf", [f"{PPO}num_rollout_batches=2", f"{PPO}ppo_size=lora", f"{PPO}gradient_checkpointing=false"]),
    "safe-rlhf lora+ckpt": ("safe-rlhf", [f"{PPO}num_rollout_batches=2", f"{PPO}ppo_size=lora", f"{PPO}gradient_checkpointing=true"]),
    "pddpo": ("pddpo", ["methods.pddpo.num_iterations=1"]),
    # the same PD-DPO with gradient checkpointing on its DPO steps: exact (same loss), one more forward per step
    "pddpo+ckpt": ("pddpo", ["methods.pddpo.num_iterations=1", "train.gradient_checkpointing=true"]),
}


def train_stage(method: str, overrides: list[str], profile: str) -> dict:
    sets = [x for s in [*SHORT, *overrides] for x in ("--set", s)]
    out = subprocess.run([sys.executable, str(HERE / "train_stage.py"), method, "--profile", profile, "--no-reuse", *sets],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{method} {overrides} train stage failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def actor_step_times(profile: str, rounds: int) -> dict[str, dict[str, float]]:
    """Seconds per rollout and per PPO actor step, full vs LoRA actor, interleaved in this one process (full, LoRA,
    full, LoRA, ... on the same 4 real prompts and the same rollout), so machine load hits both alike. The critics
    and the scorers are left out: the full ones would not fit beside each other on this machine."""
    import statistics
    import time
    from types import SimpleNamespace

    import torch
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from harness.config import load_config, method_config
    from harness.datasets import load_bundle
    from harness.models import load_tokenizer, resolve_model
    from harness.training.ppo import SharedReference, lora_actor
    from methods.safe_rlhf import SafeRLHF

    cfg = load_config(profile, [], method="safe-rlhf")
    path = str(resolve_model(cfg.model))
    prompts = list(dict.fromkeys(p.prompt for p in load_bundle(cfg).cost_pairs["train"]))[: cfg.train.batch_size]
    zero = SimpleNamespace(score=lambda p, r: [0.0] * len(p))
    methods = {}
    for size in ("full", "lora"):
        c = method_config(SafeRLHF.config_class, cfg)
        c.ppo_size = size
        m = SafeRLHF(c)
        m.cfg, m.accelerator, m.device = cfg, Accelerator(cpu=True), torch.device("cpu")
        m.tokenizer = load_tokenizer(path, padding_side="left")
        m.actor = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        m.lora = (cfg.train.lora_r, cfg.train.lora_alpha) if size == "lora" else None
        if m.lora:
            m.actor = lora_actor(m.actor, *m.lora)
            m.reference = SharedReference(m.actor)
        else:
            m.reference = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval().requires_grad_(False)
        m.critics, m.reward_model, m.cost_model, m.ptx = {}, zero, zero, None
        m.eos_ids = torch.tensor([m.tokenizer.eos_token_id])
        m.max_new_tokens = c.max_new_tokens or cfg.train.max_length - cfg.train.max_prompt_length
        m.setup_optimizers(rounds + 1)
        methods[size] = m
    times: dict[str, dict[str, list[float]]] = {size: {"rollout": [], "ppo_step": []} for size in methods}
    for i in range(rounds + 1):  # round 0 warms up (allocator, AdamW state)
        for size, m in methods.items():
            torch.manual_seed(i)
            start = time.perf_counter()
            ro = m.rollout(prompts)
            mid = time.perf_counter()
            m.ppo_step(ro, torch.ones_like(ro.log_probs), {})
            if i:
                times[size]["rollout"].append(mid - start)
                times[size]["ppo_step"].append(time.perf_counter() - mid)
    return {size: {k: statistics.median(v) for k, v in t.items()} for size, t in times.items()}


def per_call(rec: dict, phase: str) -> float:
    p = rec.get("phases", {}).get(phase)
    return p["wall_s"] / p["count"] if p and p["count"] else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--only", help="comma-separated variant names (default: all)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved full/LoRA actor timing rounds (0 = skip)")
    a = ap.parse_args()
    t = actor_step_times(a.profile, a.rounds) if a.rounds else None
    if t:
        print(f"actor only, interleaved in one process, median of {a.rounds} rounds: s per rollout full {t['full']['rollout']:.1f} / "
              f"LoRA {t['lora']['rollout']:.1f}, s per PPO actor step full {t['full']['ppo_step']:.1f} / LoRA {t['lora']['ppo_step']:.1f}; "
              f"LoRA ÷ full: rollout {t['lora']['rollout'] / t['full']['rollout']:.2f}, step {t['lora']['ppo_step'] / t['full']['ppo_step']:.2f}", flush=True)
    names = a.only.split(",") if a.only else list(VARIANTS)
    recs = {}
    for name in names:
        recs[name] = train_stage(*VARIANTS[name], a.profile)
        print(f"# {name}: " + json.dumps(recs[name]), file=sys.stderr, flush=True)  # as each finishes (a long run can be cut short)
    print(f"{'variant':20s} {'peak RSS MB':>11s} {'PPO phases MB':>13s} {'s/rollout':>9s} {'s/PPO step':>10s}  top phases")
    for name, r in recs.items():
        phases = r.get("phases", {})
        ppo_peak = max((v["peak_rss_mb"] for k, v in phases.items() if k.endswith(("/rollout", "/ppo_step"))), default=float("nan"))
        top = sorted(phases.items(), key=lambda kv: -kv[1]["peak_rss_mb"])[:3]
        print(f"{name:20s} {r['peak_rss_mb']:11.0f} {ppo_peak:13.0f} {per_call(r, 'safe-rlhf/rollout'):9.1f} "
              f"{per_call(r, 'safe-rlhf/ppo_step'):10.1f}  " + ", ".join(f"{k} {v['peak_rss_mb']:.0f}" for k, v in top))
    out: dict = {"records": recs, "actor_interleaved_s": t}
    full, lora = recs.get("safe-rlhf full"), recs.get("safe-rlhf lora")
    if full and lora:
        out["lora_over_full_peak"] = lora["peak_rss_mb"] / full["peak_rss_mb"]
        out["lora_over_full_step"] = per_call(lora, "safe-rlhf/ppo_step") / per_call(full, "safe-rlhf/ppo_step")
        print(f"LoRA ÷ full PPO: peak RSS {out['lora_over_full_peak']:.3f}, s per PPO step {out['lora_over_full_step']:.3f}")
    for name in ("safe-rlhf full", "safe-rlhf lora", "safe-rlhf lora+ckpt"):
        if "pddpo" in recs and name in recs:
            out[f"p3 vs {name}"] = recs["pddpo"]["peak_rss_mb"] / recs[name]["peak_rss_mb"]
            print(f"P3 PD-DPO ÷ {name} peak RSS = {out[f'p3 vs {name}']:.3f}; target <= 0.4")
        if "pddpo+ckpt" in recs and name in recs:
            out[f"p3 ckpt vs {name}"] = recs["pddpo+ckpt"]["peak_rss_mb"] / recs[name]["peak_rss_mb"]
            print(f"P3 PD-DPO with gradient checkpointing ÷ {name} peak RSS = {out[f'p3 ckpt vs {name}']:.3f}; target <= 0.4")
    if "pddpo+ckpt" in recs:
        print(f"PD-DPO peak RSS: {recs.get('pddpo', {}).get('peak_rss_mb', float('nan')):.0f} MB without, "
              f"{recs['pddpo+ckpt']['peak_rss_mb']:.0f} MB with gradient checkpointing (issue 12 target <= 3,000 MB)")
    if "p3 vs safe-rlhf full" in out:
        ratio = out["p3 vs safe-rlhf full"]
        result("P3", ratio=ratio, target="<= 0.4", met=ratio <= 0.4, ratio_vs_lora=out.get("p3 vs safe-rlhf lora"),
               ratio_vs_lora_ckpt=out.get("p3 vs safe-rlhf lora+ckpt"), lora_over_full_peak=out.get("lora_over_full_peak"),
               lora_over_full_step=out.get("lora_over_full_step"), pddpo=recs["pddpo"], safe_rlhf=full, safe_rlhf_lora=lora,
               safe_rlhf_lora_ckpt=recs.get("safe-rlhf lora+ckpt"), actor_interleaved_s=t,
               pddpo_ckpt=recs.get("pddpo+ckpt"), ratio_ckpt=out.get("p3 ckpt vs safe-rlhf full"),
               ratio_ckpt_vs_lora=out.get("p3 ckpt vs safe-rlhf lora"))
    else:
        result("P3-partial", **out)


if __name__ == "__main__":
    main()
