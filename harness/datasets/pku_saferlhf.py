"""PKU-SafeRLHF: reward pairs (chosen = `better_response_id`) and cost pairs (chosen = `safer_response_id`).

Reads the hub dataset at a pinned revision, or a local folder (`--data-dir` / `BENCH_DATA_DIR`) of
.jsonl/.json/.parquet files in any of these schemas:
- v0 / v1 rows (`prompt, response_0, response_1, is_response_{0,1}_safe, better_response_id, safer_response_id`,
  v1 adding severities and harm categories): both views;
- safe/unsafe pair files (`prompt, safe_response, unsafe_response`): cost pairs with is_safe = (True, False);
- `{prompt, response: [safer, other]}` (the derived 5k realign-DPO file): cost pairs with is_safe = (True, False);
- `{prompt, response: str}` SFT rows are not preferences: skipped and counted.
Label-inconsistent cost pairs (the "safer" response unsafe, the other safe) are dropped as Safe-RLHF does, and so
are pairs whose two responses are identical. Folds come from a stable prompt hash.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import BenchError, DataError
from harness.types import DatasetBundle, EvalPrompt, PreferencePair

from .common import cap, dedupe, need, need_text, normalize_prompt, read_records, resolve_local, split_pairs
from .hub import load_split

HUB_ID = "PKU-Alignment/PKU-SafeRLHF"
# Hub revision: the public commit of the v1 release's card, so two users load the same rows. The v0 data is the tag
# "v0" (`--set data.revision=v0`); `data.revision` overrides either.
HUB_REVISION = "8b87c3304fe428df5ae84a5a00f9d3ef9e4f135e"
V0_REVISION = "v0"
CONFIGS = ("default", "alpaca-7b", "alpaca2-7b", "alpaca3-8b")
ROW_FIELDS = ("prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe", "better_response_id", "safer_response_id")


def _category(rec: dict[str, Any], k: int) -> str | None:
    cats = rec.get(f"response_{k}_harm_category")
    if isinstance(cats, dict):
        on = sorted(c for c, v in cats.items() if v)
        return on[0] if on else None
    return None


V1_FIELDS = ("response_0_severity_level", "response_1_severity_level")


def pairs_from_row(rec: dict[str, Any], where: Path, row: int, require_v1: bool = False) -> tuple[PreferencePair, PreferencePair]:
    """(reward pair, cost pair) from one v0/v1 row, validated field by field."""
    prompt = need_text(rec, "prompt", where, row)
    if require_v1 and not all(f in rec for f in V1_FIELDS):
        raise DataError("a PKU-SafeRLHF v0 row (no severity levels) where the config needs v1 rows", file=str(where), row=row,
                        field=V1_FIELDS[0], fix="use the v1 files, or --set data.subset=default for v0 data")
    responses = [need(rec, f"response_{k}", str, where, row) for k in (0, 1)]
    safe = [need(rec, f"is_response_{k}_safe", bool, where, row) for k in (0, 1)]
    ids = {}
    for f in ("better_response_id", "safer_response_id"):
        v = need(rec, f, int, where, row)
        if v not in (0, 1):
            raise DataError(f"must be 0 or 1, got {v!r}", file=str(where), row=row, field=f)
        ids[f] = v
    sev = [rec.get(f"response_{k}_severity_level") for k in (0, 1)]
    src = f"{where.name}:{row}"

    def view(chosen: int) -> PreferencePair:
        other = 1 - chosen
        return PreferencePair(prompt, responses[chosen], responses[other], safe[chosen], safe[other], sev[chosen], sev[other],
                              _category(rec, other) or _category(rec, chosen), src)

    return view(ids["better_response_id"]), view(ids["safer_response_id"])


def read_local(folder: Path, counts: dict[str, Any], require_v1: bool = False) -> tuple[list[PreferencePair], list[PreferencePair]]:
    reward, cost = [], []
    files = sorted(p for p in folder.rglob("*") if p.is_file() and (p.suffix in (".json", ".jsonl", ".parquet") or p.name.endswith(".jsonl.gz")))
    if not files:
        raise BenchError(f"no .json/.jsonl/.parquet files under {folder}: point --data-dir at a folder holding PKU-SafeRLHF files")
    for path in files:
        n_rows = 0
        for row, rec in read_records(path):
            n_rows += 1
            if "response_0" in rec or "better_response_id" in rec:
                r, c = pairs_from_row(rec, path, row, require_v1)
                reward.append(r)
                cost.append(c)
            elif "safe_response" in rec or "unsafe_response" in rec:
                p, s, u = need_text(rec, "prompt", path, row), need(rec, "safe_response", str, path, row), need(rec, "unsafe_response", str, path, row)
                cost.append(PreferencePair(p, s, u, True, False, source=f"{path.name}:{row}"))
            elif isinstance(rec.get("response"), list):
                p = need_text(rec, "prompt", path, row)
                resp = rec["response"]
                if len(resp) != 2 or not all(isinstance(x, str) for x in resp):
                    raise DataError("expected [safer_response, other_response]", file=str(path), row=row, field="response")
                cost.append(PreferencePair(p, resp[0], resp[1], True, False, source=f"{path.name}:{row}"))
            elif isinstance(rec.get("response"), str):
                counts["skipped_unpaired_rows"] = counts.get("skipped_unpaired_rows", 0) + 1
            else:
                raise DataError(f"unrecognised schema (columns: {', '.join(sorted(rec))[:120]})", file=str(path), row=row,
                                fix=f"expected PKU-SafeRLHF columns {', '.join(ROW_FIELDS)} or prompt/safe_response/unsafe_response")
        counts.setdefault("rows_per_file", {})[str(path.relative_to(folder))] = n_rows
    return reward, cost


def read_hub(subset: str, revision: str, counts: dict[str, Any]) -> tuple[list[PreferencePair], list[PreferencePair], dict[str, list[str]]]:
    """Both hub splits. Hub `test` prompts are forced into the eval fold so published test prompts stay unseen."""
    if subset not in CONFIGS:
        raise BenchError(f"unknown PKU-SafeRLHF config '{subset}': choose one of {', '.join(CONFIGS)} (--set data.subset=...)")
    reward, cost, split_prompts = [], [], {}
    for split in ("train", "test"):
        ds = load_split(HUB_ID, revision, split, name=subset)
        where = Path(f"hub:{HUB_ID}/{subset}/{split}")
        counts.setdefault("rows_per_file", {})[str(where)] = len(ds)
        for row, rec in enumerate(ds):
            r, c = pairs_from_row(rec, where, row)
            reward.append(r)
            cost.append(c)
        split_prompts[split] = list(ds["prompt"])
    return reward, cost, split_prompts


def force_into_eval(folds: dict[str, list[PreferencePair]], prompts: set[str]) -> int:
    """Move every pair whose normalised prompt is in `prompts` to the eval fold; returns how many moved. Folds stay
    prompt-disjoint: a prompt's pairs all hash to one fold, and all of them move."""
    moved = 0
    for fold, pairs in folds.items():
        if fold == "eval":
            continue
        keep = [p for p in pairs if normalize_prompt(p.prompt) not in prompts]
        folds["eval"].extend(p for p in pairs if normalize_prompt(p.prompt) in prompts)
        moved += len(pairs) - len(keep)
        folds[fold] = keep
    return moved


def clean(pairs: list[PreferencePair], counts: dict[str, Any], view: str) -> list[PreferencePair]:
    n0 = len(pairs)
    pairs = [p for p in pairs if p.chosen.strip() != p.rejected.strip()]
    counts[f"{view}_dropped_identical"] = n0 - len(pairs)
    if view == "cost":
        n1 = len(pairs)
        pairs = [p for p in pairs if not (p.chosen_safe is False and p.rejected_safe is True)]
        counts["cost_dropped_label_inconsistent"] = n1 - len(pairs)
    pairs, dup = dedupe(pairs)
    counts[f"{view}_dropped_duplicate"] = dup
    return pairs


def load(cfg) -> DatasetBundle:
    counts: dict[str, Any] = {}
    folder = resolve_local(cfg.data.data_dir, "pku_saferlhf", "PKU-SafeRLHF")
    if folder is not None:
        # the per-model configs exist only in v1: a v0 file there would silently lack severities and categories
        reward, cost = read_local(folder, counts, require_v1=cfg.data.subset != "default")
        source = str(folder)
    else:
        revision = cfg.data.revision or HUB_REVISION
        reward, cost, split_prompts = read_hub(cfg.data.subset, revision, counts)
        source = f"hub:{HUB_ID}@{revision}/{cfg.data.subset}"
    reward, cost = clean(reward, counts, "reward"), clean(cost, counts, "cost")
    bundle = DatasetBundle(name="pku-saferlhf", source=source, default_cost_scorer="minilm-cost")
    bundle.reward_pairs, bundle.cost_pairs = split_pairs(reward), split_pairs(cost)
    if folder is None:  # the hub's published test prompts are evaluation prompts only
        test = {normalize_prompt(p) for p in split_prompts["test"]}
        counts["hub_test_pairs_moved_to_eval"] = sum(force_into_eval(folds, test) for folds in (bundle.reward_pairs, bundle.cost_pairs))
    want = cfg.data.max_train_pairs
    for kind, folds in (("reward", bundle.reward_pairs), ("cost", bundle.cost_pairs)):
        have = len(folds["train"])
        folds["train"] = cap(folds["train"], want)
        if cfg.data.max_scorer_pairs:
            folds["scorer"] = cap(folds["scorer"], cfg.data.max_scorer_pairs)
        if want and have < want:
            bundle.notes.append(f"only {have} {kind} training pairs in {source} (profile asks for {want}); the full set is on the hub")
    # prompts per fold: every unique prompt of any pair
    seen: dict[str, dict[str, EvalPrompt]] = {}
    for folds in (bundle.reward_pairs, bundle.cost_pairs):
        for fold, pairs in folds.items():
            for p in pairs:
                seen.setdefault(fold, {}).setdefault(normalize_prompt(p.prompt), EvalPrompt(p.prompt, p.category))
    bundle.prompts = {fold: sorted(d.values(), key=lambda e: normalize_prompt(e.prompt)) for fold, d in seen.items()}
    bundle.prompts["dual"] = bundle.prompts.get("dual", [])[: cfg.data.max_dual_prompts or None]
    counts["folds"] = {
        fold: {"reward_pairs": len(bundle.reward_pairs.get(fold, [])), "cost_pairs": len(bundle.cost_pairs.get(fold, [])), "prompts": len(bundle.prompts.get(fold, []))}
        for fold in ("train", "scorer", "dual", "eval")
    }
    bundle.counts = counts
    return bundle
