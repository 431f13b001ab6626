"""The GPU check: the harness's real CUDA code paths, timed, in a few minutes on one GPU (run by scripts/gpu_check.sh).

1. bf16 DPO steps through `harness.training.dpo.train_dpo` (TRL's DPOTrainer) on the SmolLM2-135M architecture, with MFU.
2. The HF generator (`harness.generation.HFGenerator`) on CUDA in bf16: greedy, twice (must be identical), tokens/s.
3. A score model (`evaluators.score_models.SequenceClassifierScorer`, the MiniLM architecture) on CUDA in bf16
   against the same network on CPU in fp32 (rank correlation and max |Δ|), and in fp32 on CUDA (the device's own
   share of the difference), and a few bf16 training steps of it. Then the harness's trained cpu-profile cost model
   (carried in fp16): CUDA bf16 vs CPU fp32 on 128 real responses (ranking and unsafe-call agreement).
4. vLLM, where it imports: greedy generation of the same prompts vs the HF generator (exact-match rate) and the
   vLLM/HF speed ratio.

Weights: the GPU machine cannot reach the hub and a call carries at most 64 MiB, so the policy and the score model
are built there from the carried configs and tokenizers (`--assets`, made by `gpu_check.sh --prepare`) with seeded
random weights. Speed, memory, MFU and numerical agreement do not depend on the weights; text quality does, so
the check reports no quality number. The preference pairs are real (64 PKU-SafeRLHF cost pairs, carried as JSON).

`--dry-run` runs every step on CPU at toy sizes (fp32): it proves the script starts and its code paths connect.
The report (Markdown) goes to stdout and to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

H200_BF16_DENSE = 989e12  # datasheet dense bf16 FLOP/s (H100/H200 SXM); measured 8k^3 matmul here: ~790e12


def log(msg: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def build_random(config_dir: Path, out: Path, kind: str, seed: int = 0, shrink: bool = False) -> Path:
    """A saved model folder with the carried config + tokenizer and seeded random weights (`shrink`: 2 narrow
    layers, for the CPU dry run)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    if (out / "config.json").exists():
        return out
    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(config_dir)
    if shrink:
        config.num_hidden_layers, config.hidden_size, config.intermediate_size = 2, 64, 128
        config.num_attention_heads = 4
        if hasattr(config, "num_key_value_heads"):
            config.num_key_value_heads = 2
        if hasattr(config, "head_dim"):
            config.head_dim = 16
    if kind == "causal":
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    else:
        config.num_labels = 1
        config.initializer_range = 0.2  # BERT's 0.02 gives near-constant random scores: nothing to compare across devices
        model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(config_dir).save_pretrained(out)
    for extra in ("chat_template.jinja", "generation_config.json"):
        if (config_dir / extra).exists() and not (out / extra).exists():
            (out / extra).write_bytes((config_dir / extra).read_bytes())
    return out


def load_pairs(path: Path):
    from harness.types import PreferencePair

    return [PreferencePair(**row) for row in json.loads(path.read_text())]


def check_dpo(policy: Path, pairs, device: str, dry: bool, work: Path) -> dict:
    from harness.config import load_config
    from harness.training.dpo import read_train_record, train_dpo

    steps, batch, length = (2, 2, 128) if dry else (24, 16, 512)
    cfg = load_config("gpu", [f"train.max_steps={steps}", f"train.batch_size={batch}", "train.grad_accum=1",
                              f"train.max_length={length}", "train.precision=" + ("fp32" if dry else "bf16"),
                              "train.gradient_checkpointing=false", "train.warmup_ratio=0", "train.learning_rate=1e-6"],
                      method="dpo-harmless", model=str(policy), device=device)
    need = steps * batch
    use = (pairs * (need // len(pairs) + 1))[:need]
    t = time.time()
    out = train_dpo(use, init=policy, ref=None, beta=0.1, out_dir=work / "dpo", cfg=cfg, device=device,
                    ref_cache_dir=work / "refcache", resume=False)
    wall = time.time() - t
    rec = read_train_record(out)
    final = next((h for h in reversed(rec["log_history"]) if "train_runtime" in h), {})
    tokens = max((h.get("num_tokens", 0) for h in rec["log_history"]), default=0)
    runtime = float(final.get("train_runtime") or wall)
    import torch

    n_params = _load(out).num_parameters()
    flops = 6 * n_params * float(tokens)  # forward + backward of the policy on every (chosen and rejected) token
    res = {"steps": rec["steps"], "pairs_per_step": batch, "max_length": length, "train_loss": rec["train_loss"],
           "train_runtime_s": round(runtime, 2), "wall_s_with_setup": round(wall, 2), "tokens": tokens, "params": n_params,
           "achieved_tflops": round(flops / runtime / 1e12, 2) if runtime else None}
    if device == "cuda":
        res["mfu_vs_989_tflops"] = round(flops / runtime / H200_BF16_DENSE, 4)
        res["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return res


def _load(path: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path)


def check_generation(policy: Path, prompts: list[str], device: str, dry: bool) -> tuple[dict, list[str]]:
    from harness.generation import HFGenerator, close_generator
    from harness.types import SamplingParams

    new = 16 if dry else 128
    params = SamplingParams(max_new_tokens=new, temperature=0.0)
    gen = HFGenerator(policy, template="chat", batch_size=len(prompts), device=device, precision="fp32" if dry else "bf16")
    gen.generate(prompts[:2], SamplingParams(max_new_tokens=4))  # warm-up (kernels, allocator)
    sync(device)
    t = time.time()
    first = gen.generate(prompts, params)
    sync(device)
    secs = time.time() - t
    second = gen.generate(prompts, params)
    res = {"prompts": len(prompts), "max_new_tokens": new, "seconds": round(secs, 3),
           "new_tokens_per_s_upper_bound": round(len(prompts) * new / secs, 1), "deterministic": first == second,
           "responses_differing_between_two_greedy_passes": sum(a != b for a, b in zip(first, second)),
           "empty_responses": sum(1 for r in first if not r)}
    if first != second:  # is it the kernels? the same two passes under torch's deterministic algorithms
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            a, b = gen.generate(prompts, params), gen.generate(prompts, params)
            res["differing_under_use_deterministic_algorithms"] = sum(x != y for x, y in zip(a, b))
        finally:
            torch.use_deterministic_algorithms(False)
        close_generator(gen)
        gen = HFGenerator(policy, template="chat", batch_size=len(prompts), device=device, precision="fp32")
        a, b = gen.generate(prompts, params), gen.generate(prompts, params)  # and in fp32
        res["differing_in_fp32"] = sum(x != y for x, y in zip(a, b))
    close_generator(gen)
    return res, first


def check_scorer(encoder: Path, pairs, device: str, dry: bool, work: Path) -> dict:
    import numpy as np

    from evaluators.score_models import SequenceClassifierScorer

    prompts, responses = [p.prompt for p in pairs], [p.chosen for p in pairs]
    cpu = SequenceClassifierScorer(encoder, "cost", device="cpu", precision="fp32", use_cache=False).score(prompts, responses)
    dev = SequenceClassifierScorer(encoder, "cost", device=device, precision="fp32" if dry else "bf16", use_cache=False)
    sync(device)
    t = time.time()
    got = dev.score(prompts, responses)
    sync(device)
    secs = time.time() - t
    a, b = np.array(cpu), np.array(got)
    res = {"n": len(a), "seconds": round(secs, 3), "max_abs_diff_vs_cpu_fp32": float(np.abs(a - b).max()),
           "score_std": float(a.std()), "spearman_vs_cpu_fp32": spearman(a, b)}
    if not dry:  # the same network in fp32 on the GPU: separates the device's effect from bf16's
        c = np.array(SequenceClassifierScorer(encoder, "cost", device=device, precision="fp32", use_cache=False).score(prompts, responses))
        res["device_fp32_max_abs_diff_vs_cpu_fp32"] = float(np.abs(a - c).max())
        res["device_fp32_spearman_vs_cpu_fp32"] = spearman(a, c)
    try:  # a few bf16 training steps of the harness's score-model trainer on CUDA
        from harness.config import load_config
        from evaluators.score_models import settings_for, train_score_model

        cfg = load_config("gpu", ["train.precision=" + ("fp32" if dry else "bf16")], device=device)
        settings = settings_for(cfg)
        import dataclasses

        fields = {f.name for f in dataclasses.fields(settings)}
        over = {k: v for k, v in {"epochs": 1, "max_steps": 4, "batch_size": 8}.items() if k in fields}
        settings = dataclasses.replace(settings, **over)
        t = time.time()
        train_score_model("cost", pairs, work / "scorer", cfg, encoder=str(encoder), settings=settings)
        res["train_4_steps_s"] = round(time.time() - t, 2)
    except Exception as exc:  # noqa: BLE001  (reported, the check goes on)
        res["train_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return res


def spearman(a, b) -> float:
    import numpy as np

    rank = lambda x: np.argsort(np.argsort(x))  # noqa: E731
    return float(np.corrcoef(rank(a), rank(b))[0, 1])


def check_trained_scorer(path: Path, pairs, device: str, dry: bool) -> dict:
    """The harness's trained cpu-profile cost model (carried in fp16, loaded as fp32 on CPU and bf16 on the device)
    on the 128 real responses of the carried pairs: does bf16 on the GPU keep its ranking and its unsafe (> 0) calls?
    Agreement only: these pairs may be in its training fold, so no accuracy is reported."""
    import numpy as np

    from evaluators.score_models import SequenceClassifierScorer

    prompts = [p.prompt for p in pairs] * 2
    responses = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    a = np.array(SequenceClassifierScorer(path, "cost", device="cpu", precision="fp32", use_cache=False).score(prompts, responses))
    b = np.array(SequenceClassifierScorer(path, "cost", device=device, precision="fp32" if dry else "bf16",
                                          use_cache=False).score(prompts, responses))
    return {"n": len(a), "weights": json.loads((path / "carried.json").read_text()) if (path / "carried.json").exists() else str(path),
            "score_std": float(a.std()), "max_abs_diff_vs_cpu_fp32": float(np.abs(a - b).max()),
            "spearman_vs_cpu_fp32": spearman(a, b), "unsafe_call_agreement": float((np.sign(a) == np.sign(b)).mean())}


def check_vllm(policy: Path, prompts: list[str], hf_out: list[str], hf_secs: float, new: int) -> dict:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return {"status": "skipped: vllm is not installed on this machine (its wheel is far over the 64 MiB a call carries)"}
    from harness.generation import VLLMGenerator, close_generator, vllm_settings
    from harness.config import load_config
    from harness.types import SamplingParams

    cfg = load_config("gpu", ["generation.max_model_len=1024", "generation.gpu_memory_utilization=0.5"])
    gen = VLLMGenerator(policy, template="chat", precision="bf16", **vllm_settings(cfg.generation, "cuda"))
    params = SamplingParams(max_new_tokens=new, temperature=0.0)
    gen.generate(prompts[:2], SamplingParams(max_new_tokens=4))
    t = time.time()
    out = gen.generate(prompts, params)
    secs = time.time() - t
    close_generator(gen)
    same = sum(a == b for a, b in zip(out, hf_out))
    return {"status": "ran", "exact_match_vs_hf_greedy": f"{same}/{len(out)}", "seconds": round(secs, 3),
            "speedup_vllm_over_hf": round(hf_secs / secs, 2), "note": "random weights: near-tied logits make bf16 greedy paths diverge"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=Path, default=REPO / ".gpucheck", help="made by gpu_check.sh --prepare")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown report here too")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu-check-work"))
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: proves the script runs")
    args = ap.parse_args()

    import torch

    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device visible: run with --dry-run on a CPU machine", file=sys.stderr)
        return 2
    os.environ.setdefault("BENCH_CACHE", str(args.work / "cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    hw = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "cpu"
    report: dict = {"date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "hardware": hw, "device": device,
                    "dry_run": args.dry_run, "python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("transformers", "trl", "accelerate", "datasets", "vllm"):
        try:
            from importlib.metadata import version

            report[pkg] = version(pkg)
        except Exception:  # noqa: BLE001
            report[pkg] = "not installed"

    pairs = load_pairs(args.assets / "pairs.json")
    prompts = [p.prompt for p in pairs[: (4 if args.dry_run else 64)]]
    steps = {}
    log("building the SmolLM2-135M-architecture policy and the MiniLM-architecture scorer (seeded random weights)")
    policy = build_random(args.assets / "smollm2-135m", args.work / "policy", "causal", shrink=args.dry_run)
    encoder = build_random(args.assets / "minilm", args.work / "minilm-scorer", "seqcls", shrink=args.dry_run)

    def step(name, fn):
        log(f"{name} ...")
        t = time.time()
        try:
            steps[name] = fn()
            steps[name]["ok"] = True
        except Exception as exc:  # noqa: BLE001  (one failing step must not hide the others' numbers)
            steps[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-2000:]}
        steps[name]["step_wall_s"] = round(time.time() - t, 1)
        log(f"{name}: {'ok' if steps[name]['ok'] else 'FAILED'} in {steps[name]['step_wall_s']} s")
        if device == "cuda":
            torch.cuda.empty_cache()

    step("dpo_bf16", lambda: check_dpo(policy, pairs, device, args.dry_run, args.work))
    hf_out: list[str] = []

    def gen():
        res, out = check_generation(policy, prompts, device, args.dry_run)
        hf_out.extend(out)
        return res

    step("hf_generate", gen)
    step("score_model", lambda: check_scorer(encoder, pairs, device, args.dry_run, args.work))
    if (args.assets / "cost-scorer" / "config.json").exists():
        step("trained_cost_scorer", lambda: check_trained_scorer(args.assets / "cost-scorer", pairs, device, args.dry_run))
    if device == "cuda" and hf_out:
        step("vllm_vs_hf", lambda: check_vllm(policy, prompts, hf_out, steps["hf_generate"]["seconds"], steps["hf_generate"]["max_new_tokens"]))
    report["steps"] = steps
    report["total_s"] = round(time.time() - t0, 1)
    text = render(report)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        (args.out.with_suffix(".json")).write_text(json.dumps(report, indent=2, default=str))
    return 0 if all(s.get("ok") for s in steps.values()) else 1


def render(report: dict) -> str:
    head = {k: v for k, v in report.items() if k != "steps"}
    lines = ["## GPU check output", "", "```", *(f"{k}: {v}" for k, v in head.items()), "```", ""]
    for name, res in report["steps"].items():
        lines += [f"### {name}: {'ok' if res.get('ok') else 'FAILED'}", "", "```"]
        lines += [f"{k}: {v}" for k, v in res.items() if k not in ("ok", "traceback")]
        if res.get("traceback"):
            lines += ["", res["traceback"]]
        lines += ["```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
