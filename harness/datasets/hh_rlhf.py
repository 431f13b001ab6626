"""HH-RLHF harmless-base: harmlessness preference pairs (chosen = less harmful), a second cost-pair source.

Each dialogue pair shares every turn but the last assistant turn: prompt = the shared dialogue up to the final
"\n\nAssistant:", responses = the two final turns. No helpfulness or is_safe labels exist in this split.
"""

from __future__ import annotations

from harness.errors import BenchError, DataError
from harness.types import DatasetBundle, EvalPrompt, PreferencePair

from .common import cap, dedupe, need, normalize_prompt, read_records, resolve_local, split_pairs

HUB_ID = "Anthropic/hh-rlhf"
MARK = "\n\nAssistant:"


def load(cfg) -> DatasetBundle:
    folder = resolve_local(cfg.data.data_dir, "hh_rlhf/harmless-base", "hh_rlhf")
    if folder is None:
        raise BenchError("hh-rlhf-harmless reads local files only for now: pass --data-dir with hh_rlhf/harmless-base/test.jsonl.gz")
    pairs = []
    files = sorted(folder.rglob("*.jsonl*"))
    if not files:
        raise BenchError(f"no .jsonl(.gz) files under {folder}")
    for path in files:
        for row, rec in read_records(path):
            chosen, rejected = need(rec, "chosen", str, path, row), need(rec, "rejected", str, path, row)
            i, j = chosen.rfind(MARK), rejected.rfind(MARK)
            if i < 0 or j < 0:
                raise DataError("no final '\\n\\nAssistant:' turn", file=str(path), row=row, field="chosen")
            prompt = chosen[:i].strip()
            pairs.append(PreferencePair(prompt, chosen[i + len(MARK):].strip(), rejected[j + len(MARK):].strip(), source=f"{path.name}:{row}"))
    pairs = [p for p in pairs if p.chosen != p.rejected]
    pairs, _ = dedupe(pairs)
    bundle = DatasetBundle(name="hh-rlhf-harmless", source=str(folder), default_cost_scorer="minilm-cost")
    bundle.cost_pairs = split_pairs(pairs)
    bundle.cost_pairs["train"] = cap(bundle.cost_pairs["train"], cfg.data.max_train_pairs)
    bundle.reward_pairs = {f: [] for f in bundle.cost_pairs}
    bundle.prompts = {f: list({normalize_prompt(p.prompt): EvalPrompt(p.prompt) for p in ps}.values()) for f, ps in bundle.cost_pairs.items()}
    bundle.notes.append("HH-RLHF harmless-base has no helpfulness pairs: reward-pair methods cannot train on it")
    bundle.counts = {"folds": {f: {"cost_pairs": len(v)} for f, v in bundle.cost_pairs.items()}}
    return bundle
