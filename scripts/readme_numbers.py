"""Write every number the README shows from the JSON/CSV files in docs/, so no README number is typed by hand.

    python scripts/readme_numbers.py            # rewrite the README's generated blocks
    python scripts/readme_numbers.py --check    # exit 1 if any block differs from what the files give (a test runs this)

Blocks (each between `<!-- NAME:begin -->` and `<!-- NAME:end -->`):
- `headline`: the seed paper's comparison set (HEADLINE) from the leaderboard export `docs/leaderboard-cpu.csv`
  (`bench leaderboard --format csv`, written by `scripts/cpu_suite.sh`): rank, tier, reward, unsafe rate (raw and
  corrected), over-refusal and, when the records have it, harmful compliance; then, in words, which differences from
  SFT survive Holm, and a banner when every row is in one tier (equal ranks, no winner).
- `judges`: each judge's held-out accuracy per source with its 95% CI beside the best baseline, from
  `docs/judges_cpu.json` (`bench judge eval --profile cpu --json`).
- `cost`: the `make bench` targets table, from `docs/benchmarks.md` (written from `docs/benchmarks.json` by
  `benchmarks/run_all.py`).
The blocks carry no date, so `--check` compares content only.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LEADERBOARD_CSV = ROOT / "docs" / "leaderboard-cpu.csv"
JUDGES_JSON = ROOT / "docs" / "judges_cpu.json"
BENCH_MD = ROOT / "docs" / "benchmarks.md"
# the seed paper's (PD-DPO, arXiv 2510.05703) comparison set; the other methods stay on the full page
HEADLINE = ("sft", "dpo-helpful", "dpo-harmless", "safedpo", "sacpo", "pddpo", "safe-rlhf")
ALPHA = 0.05
# (csv column prefix, header, percent?) in display order; a column absent from the export is left out
COLUMNS = (("reward_mean", "Reward", False), ("unsafe_rate", "Unsafe (judge)", True),
           ("unsafe_rate_corrected", "Unsafe, corrected", True), ("refusal_rate", "Over-refusal (XSTest)", True),
           ("harmful_compliance", "Harmful compliance", True))
# vs-SFT paired tests in the export: (column stem, words)
VS_SFT = (("unsafe_rate", "unsafe rate"), ("refusal_rate", "over-refusal"), ("reward_lc", "length-controlled reward"),
          ("harmful_compliance", "harmful compliance"))


def replace_block(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"the README needs exactly one {begin} ... {end} block")
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{body.rstrip()}\n{end}{tail}"


def _f(row: dict, key: str) -> float | None:
    v = row.get(key)
    if v in (None, ""):
        return None
    x = float(v)
    return None if math.isnan(x) else x


def _cell(row: dict, key: str, pct: bool) -> str:
    v, lo, hi = _f(row, key), _f(row, f"{key}_ci_low"), _f(row, f"{key}_ci_high")
    if v is None:
        return "–"
    f = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:.3f}")
    star = "*" if key == "unsafe_rate_corrected" and row.get("unsafe_rg_clipped") == "True" else ""
    txt = f"{f(v)}{'%' if pct else ''}{star}"
    return txt + (f" [{f(lo)}, {f(hi)}]" if lo is not None and hi is not None else "")


def equal_ranks(tiers: list[int]) -> list[str]:
    """Rank by tier: every method in a tier shares the rank 1 + (methods in better tiers), marked `=` when shared."""
    out = []
    for t in tiers:
        better, same = sum(1 for x in tiers if x < t), sum(1 for x in tiers if x == t)
        out.append(f"{better + 1}{'=' if same > 1 else ''}")
    return out


def headline(csv_path: Path = LEADERBOARD_CSV, methods: tuple[str, ...] = HEADLINE) -> str:
    rows = list(csv.DictReader(csv_path.open()))
    if not rows:
        return f"**No leaderboard export yet** ({csv_path.name}): run `scripts/cpu_suite.sh`."
    by_method = {r["method"]: r for r in rows}
    # by tier, then in the fixed order of `methods` (never by point estimates inside a tier: they are not a ranking)
    shown = sorted((by_method[m] for m in methods if m in by_method), key=lambda r: (int(r["tier"]), methods.index(r["method"])))
    missing = [m for m in methods if m not in by_method]
    cols = [c for c in COLUMNS if f"{c[0]}" in rows[0]]
    tiers = [int(r["tier"]) for r in shown]
    ranks = equal_ranks(tiers)
    first = rows[0]
    out = [f"{first['dataset']} · {first['model']} · `{first['profile']}` profile · {first['n_seeds']} seeds · "
           f"{first['n_prompts']} eval prompts, the same for every method. Source: "
           f"[docs/leaderboard-cpu.csv](docs/leaderboard-cpu.csv) (full page: [docs/leaderboard-cpu.md](docs/leaderboard-cpu.md)).",
           ""]
    if len(set(int(r["tier"]) for r in rows)) == 1:
        out += ["> **No method can be told apart from the others** after Holm correction (paired tests, 5%): every row "
                "is in one tier, so the ranks are equal. The point estimates below are not a ranking.", ""]
    out += ["| Rank | Method | Tier | " + " | ".join(h for _, h, _ in cols) + " |",
            "|---:|---|---:|" + "---:|" * len(cols)]
    for rank, r in zip(ranks, shown):
        out.append(f"| {rank} | `{r['method']}` | {r['tier']} | " + " | ".join(_cell(r, k, p) for k, _, p in cols) + " |")
    out.append("")
    sig = []
    for r in shown:
        for stem, words in VS_SFT:
            p, d = _f(r, f"vs_sft_{stem}_p_holm"), _f(r, f"vs_sft_{stem}_diff")
            if p is not None and d is not None and p < ALPHA:
                sig.append(f"`{r['method']}` {words} {'+' if d > 0 else '−'}{abs(100 * d if stem != 'reward_lc' else d):.3g}"
                           f"{' points' if stem != 'reward_lc' else ''} (Holm p = {p:.3g})")
    out.append("Differences from `sft` that survive Holm (paired, 5%): " + ("; ".join(sig) + "." if sig else
               "**none**, on any metric: no method is shown to differ from SFT."))
    if "harmful_compliance" not in rows[0]:
        out.append("Harmful compliance (BeaverTails and red-team prompts, refusal judge) is not in these records: they "
                   "predate the metric.")
    if missing:
        out.append("No finished runs in the export for: " + ", ".join(f"`{m}`" for m in missing) + ".")
    out.append(f"Tiers and Holm families are those of the full page ({len(rows)} methods); `*`: clipped at the judge's "
               "false-positive floor.")
    return "\n".join(out)


# the held-out sources the README shows per judge (every source is on docs/judges_cpu.md)
JUDGE_SOURCES = {"safety-judge": ("pku", "pku-v1", "do-not-answer"), "reward-judge": ("hh-helpful-base", "pandalm", "autoj"),
                 "refusal-judge": ("xstest", "do-not-answer"), "truthfulness-judge": ("truthfulqa",)}


def judges(json_path: Path = JUDGES_JSON) -> str:
    cards = json.loads(json_path.read_text())
    out = ["| judge | held-out source | labels | n | accuracy [95% CI] | best baseline | beats it? |", "|---|---|---|---:|---|---|---|"]
    for name, card in cards.items():
        for source, h in card.get("heldout", {}).items():
            if source not in JUDGE_SOURCES.get(name, (source,)):
                continue
            acc = h.get("accuracy") or {}
            if acc.get("value") is None:
                continue
            base = {k: v for k, v in (h.get("baselines") or {}).items() if isinstance(v, dict) and v.get("value") is not None}
            best = max(base.items(), key=lambda kv: kv[1]["value"]) if base else None
            beats = "–" if best is None else ("yes" if acc.get("ci_low", -1) > best[1]["value"] else
                                              "level" if acc["value"] >= best[1]["value"] else "no")
            labels = "human" if str(h.get("labels", "")).startswith("human") else "benchmark"
            out.append(f"| `{name}` | {source} | {labels} | {h['n']} | {acc['value']:.3f} [{acc['ci_low']:.3f}, {acc['ci_high']:.3f}] | "
                       + (f"{best[0]} {best[1]['value']:.3f}" if best else "–") + f" | {beats} |")
    out += ["", "\"yes\": the judge's CI lies above the best baseline (length, random, majority, a TF-IDF logistic "
            "regression fitted on the same rows, or a rule); \"level\": above it but inside the CI. Every source: "
            "[docs/judges_cpu.md](docs/judges_cpu.md) (`bench judge eval --profile cpu`)."]
    return "\n".join(out)


def cost(md_path: Path = BENCH_MD) -> str:
    lines = md_path.read_text().splitlines()
    i = next((k for k, ln in enumerate(lines) if ln.startswith("| id | what | measured | target | met |")), None)
    if i is None:
        return f"**No benchmark table yet** ({md_path.name}): run `make bench`."
    table = [lines[i], lines[i + 1]]
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        table.append(ln)
    stamp = next((ln for ln in lines if ln.startswith("Measured ")), "")
    when = stamp.split(" UTC")[0].removeprefix("Measured ") if stamp else "?"
    return "\n".join(table + ["", f"Measured {when} UTC by `make bench`; details and why each miss: "
                                  "[docs/benchmarks.md](docs/benchmarks.md)."])


BLOCKS = {"headline": headline, "judges": judges, "cost": cost}


def render(text: str) -> str:
    for name, make in BLOCKS.items():
        text = replace_block(text, name, make())
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the README's blocks differ from what docs/ gives")
    ap.add_argument("--readme", type=Path, default=README)
    a = ap.parse_args(argv)
    try:
        old = a.readme.read_text()
        new = render(old)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if a.check:
        if new != old:
            print(f"{a.readme} is out of date with docs/: run python scripts/readme_numbers.py", file=sys.stderr)
            return 1
        return 0
    a.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
