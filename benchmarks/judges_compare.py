"""Compare judge backbones (feature members) and draw the safety judge's learning curve (docs/judges.md).

    BENCH_DATA_DIR=../shared/data nice -n 10 python benchmarks/judges_compare.py compare --judge safety-judge \
        --members tfidf tfidf+surface tfidf+surface+overlap [--train-pairs none hh-harmless-base] [--pku-only] [--out docs/judges_compare.json]
    BENCH_DATA_DIR=../shared/data nice -n 10 python benchmarks/judges_compare.py curve --members tfidf+surface+overlap

`compare` trains each member set on judge-train, calibrates on judge-calib and prints the weighted judge-calib
accuracy (what a member set is SELECTED by) next to every held-out source's accuracy (reported, never used to
choose). `--pku-only` restricts the safety judge's training/calibration/test rows to PKU-SafeRLHF (the rows whose
embeddings fit in the CPU budget: frozen-encoder members on the full Do-Not-Answer set are too slow on 2 shared
cores). `curve` trains the safety judge on growing subsets of the PKU training rows and reports PKU held-out sign
and pairwise accuracy; its last points add the PKU rows of the METHOD folds (train/dual), which the shipped judge
never uses: a diagnostic of how accuracy grows with data, not a judge.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def _row(name, members, card, wall):
    out = {"judge": name, "members": members, "wall_s": round(wall, 1), "calib_accuracy": card["calibration"].get("calib_accuracy_weighted"),
           "calib_ece_after": card["calibration"]["ece_after"], "heldout": {}}
    for src, h in card["heldout"].items():
        out["heldout"][src] = {"n": h["n"], "accuracy": h["accuracy"], "pairwise": (h.get("pairwise_accuracy") or {}).get("value"),
                               "ece": h.get("ece"), "baselines": {k: (v or {}).get("value") for k, v in (h.get("baselines") or {}).items()}}
    return out


def _pku_only(data):
    from evaluators.judges.models import Items

    def keep(items: Items) -> Items:
        idx = [i for i, s in enumerate(items.sources) if s == "pku"]
        return Items([items.prompts[i] for i in idx], [items.a[i] for i in idx], None if items.b is None else [items.b[i] for i in idx],
                     None if items.labels is None else [items.labels[i] for i in idx], [items.sources[i] for i in idx])

    data["train"], data["calib"] = keep(data["train"]), keep(data["calib"])
    data["heldout"] = {k: v for k, v in data["heldout"].items() if k.startswith("pku")}
    return data


def compare(args) -> list[dict]:
    from evaluators.judges.core import judge_data, judge_settings, train_judge

    rows = []
    for members, pairs in [(m, tp) for m in args.members for tp in (args.train_pairs or [None])]:
        extra = {"max_train_per_source": args.max_train} if args.max_train else {}
        if pairs is not None:
            extra["train_pairs"] = "" if pairs == "none" else pairs
        s = judge_settings(args.judge, None, members=members, **extra)
        data = judge_data(args.judge, s, os.environ["BENCH_DATA_DIR"])
        if args.pku_only:
            data = _pku_only(data)
        t = time.time()
        _, card = train_judge(args.judge, s, os.environ["BENCH_DATA_DIR"], data)
        r = _row(args.judge, members + (f" + {s.train_pairs} pairs" if s.train_pairs else "") + (" (PKU only)" if args.pku_only else ""),
                 card, time.time() - t)
        rows.append(r)
        print(json.dumps({"members": r["members"], "calib_acc": r["calib_accuracy"], "wall_s": r["wall_s"],
                          **{k: (round(v["accuracy"]["value"], 3), v["pairwise"] and round(v["pairwise"], 3)) for k, v in r["heldout"].items()}}), flush=True)
    return rows


def curve(args) -> list[dict]:
    from evaluators.judges.core import _group, _pointwise, judge_data, judge_settings, train_judge
    from evaluators.judges.models import Items
    from harness.datasets.judge_data import load_all

    d = load_all(os.environ["BENCH_DATA_DIR"])
    s = judge_settings("safety-judge", None, members=args.members[0])
    base = _pku_only(judge_data("safety-judge", s, os.environ["BENCH_DATA_DIR"]))
    tr = base["train"]
    extra = [r for r in d["safety"] if r.source.startswith("pku") and r.split == "excluded"]
    extra_items = _pointwise([r.__class__(**{**r.__dict__, "split": "x"}) for r in extra], "x", 0)
    rng = np.random.default_rng(0)
    rows = []
    order = rng.permutation(len(tr))
    sizes = [n for n in (50, 100, 200, len(tr)) if n <= len(tr)]
    for n in sizes + [len(tr) + 1000, len(tr) + len(extra_items)]:
        if n <= len(tr):
            idx = order[:n]
            items = Items([tr.prompts[i] for i in idx], [tr.a[i] for i in idx], labels=[tr.labels[i] for i in idx], sources=["pku"] * n)
            kind = "judge-train (PKU scorer fold, judge half)"
        else:
            k = n - len(tr)
            items = Items(tr.prompts + extra_items.prompts[:k], tr.a + extra_items.a[:k], labels=tr.labels + extra_items.labels[:k], sources=["pku"] * n)
            kind = f"+ {k} method-fold PKU rows (diagnostic only)"
        data = {**base, "train": items}
        _, card = train_judge("safety-judge", s, os.environ["BENCH_DATA_DIR"], data)
        h = card["heldout"]["pku"]
        r = {"train_rows": n, "rows": kind, "sign_accuracy": h["accuracy"], "pairwise_accuracy": h.get("pairwise_accuracy"), "ece": h["ece"]}
        rows.append(r)
        print(json.dumps({"n": n, "kind": kind, "sign": round(h["accuracy"]["value"], 3), "pair": round(h["pairwise_accuracy"]["value"], 3)}), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("compare", "curve"))
    ap.add_argument("--judge", default="safety-judge")
    ap.add_argument("--members", nargs="+", default=["tfidf+surface+overlap"])
    ap.add_argument("--pku-only", action="store_true")
    ap.add_argument("--train-pairs", nargs="+", help="pair sources to compare (judge.train_pairs; 'none' = no pairs); default: the profile's")
    ap.add_argument("--max-train", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rows = compare(args) if args.what == "compare" else curve(args)
    if args.out:
        old = json.loads(args.out.read_text()) if args.out.exists() else []
        args.out.write_text(json.dumps(old + rows, indent=1, default=float))


if __name__ == "__main__":
    main()
