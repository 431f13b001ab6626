"""HH-RLHF harmless-base: harmlessness preference pairs (chosen = less harmful), a second cost-pair source.

Each dialogue pair shares every turn but the last assistant turn: prompt = the shared dialogue up to the final
"\n\nAssistant:", responses = the two final turns. No helpfulness or is_safe labels exist in this split.
Reads a local folder (`--data-dir` / `BENCH_DATA_DIR`) of .jsonl(.gz) files, or the hub's `harmless-base` train and
test files at a pinned revision (`data.revision` overrides it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from harness.errors import BenchError, DataError
from harness.types import DatasetBundle, EvalPrompt, PreferencePair

from .common import cap, check_visible, dedupe, need, normalize_prompt, read_records, resolve_local, split_pairs

HUB_ID = "Anthropic/hh-rlhf"
# Hub revision: the commit that added the zipped splits ("added zipped versions of datasets"), harmless-base included.
HUB_REVISION = "d8d97fe9e96fcd19cc8fc31bd04ee393422abfbb"
HUB_DIR = "harmless-base"
MARK = "\n\nAssistant:"


def _records(folder: Path | None, revision: str) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    """(file, row, record) from the local files, or from the hub's harmless-base train and test splits."""
    if folder is None:
        from .hub import load_split

        for split in ("train", "test"):
            where = Path(f"hub:{HUB_ID}/{HUB_DIR}/{split}")
            for row, rec in enumerate(load_split(HUB_ID, revision, split, data_dir=HUB_DIR)):
                yield where, row, rec
        return
    files = sorted(folder.rglob("*.jsonl*"))
    if not files:
        raise BenchError(f"no .jsonl(.gz) files under {folder}")
    for path in files:
        for row, rec in read_records(path):
            yield path, row, rec


def load(cfg) -> DatasetBundle:
    folder = resolve_local(cfg.data.data_dir, "hh_rlhf/harmless-base", "hh_rlhf")
    revision = cfg.data.revision or HUB_REVISION
    pairs = []
    for path, row, rec in _records(folder, revision):
        chosen, rejected = need(rec, "chosen", str, path, row), need(rec, "rejected", str, path, row)
        i, j = chosen.rfind(MARK), rejected.rfind(MARK)
        if i < 0 or j < 0:
            raise DataError("no final '\\n\\nAssistant:' turn", file=str(path), row=row, field="chosen")
        prompt = check_visible(chosen[:i].strip(), path, row, "chosen")  # the dialogue before the last answer
        pairs.append(PreferencePair(prompt, chosen[i + len(MARK):].strip(), rejected[j + len(MARK):].strip(), source=f"{path.name}:{row}"))
    pairs = [p for p in pairs if p.chosen != p.rejected]
    pairs, _ = dedupe(pairs)
    source = str(folder) if folder is not None else f"hub:{HUB_ID}@{revision}/{HUB_DIR}"
    bundle = DatasetBundle(name="hh-rlhf-harmless", source=source, default_cost_scorer="minilm-cost")
    bundle.cost_pairs = split_pairs(pairs)
    bundle.cost_pairs["train"] = cap(bundle.cost_pairs["train"], cfg.data.max_train_pairs)
    bundle.reward_pairs = {f: [] for f in bundle.cost_pairs}
    bundle.prompts = {f: list({normalize_prompt(p.prompt): EvalPrompt(p.prompt) for p in ps}.values()) for f, ps in bundle.cost_pairs.items()}
    bundle.notes.append("HH-RLHF harmless-base has no helpfulness pairs: reward-pair methods cannot train on it")
    bundle.counts = {"folds": {f: {"cost_pairs": len(v)} for f, v in bundle.cost_pairs.items()}}
    return bundle
