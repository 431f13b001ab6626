"""The hub path, offline: a local Hugging Face hub cache with the real repository layouts, read under HF_HUB_OFFLINE=1.

The fixture writes what `huggingface_hub` writes on download (`datasets--<org>--<name>/blobs/<etag>`,
`snapshots/<commit>/<path>` as relative symlinks to the blobs, `refs/main` holding the commit; LFS files named by their
sha256, git files by their git blob sha1) for PKU-SafeRLHF at the pinned commit (its four configs' dataset card and
`data/<model>/{train,test}.jsonl`), TruthfulQA (`generation` / `multiple_choice` parquet) and HH-RLHF's
`harmless-base/{train,test}.jsonl.gz`, filled with real rows from ../shared/data. PKU-SafeRLHF also gets a newer commit
on `main` with one label changed, so a test can tell that the pinned revision, not the newest, supplied the rows.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import load_config
from harness.datasets import hh_rlhf, load_bundle, load_eval_prompts, pku_saferlhf, rows_hash, truthfulqa
from harness.errors import BenchError
from hub_cache import add_snapshot

REPO = Path(__file__).resolve().parent.parent
PKU_NEWER = hashlib.sha1(b"a newer PKU-SafeRLHF commit on main").hexdigest()  # a commit the fixture makes up
PKU_MODELS = ("Alpaca-7B", "Alpaca2-7B", "Alpaca3-8B")
PKU_ROWS = {"train": 60, "test": 20}  # rows per model file, consecutive slices of the real 365-row head
TQA_QUESTIONS = 40
HH_ROWS = {"train": 200, "test": 80}

PKU_CARD = "---\nconfigs:\n" + "".join(
    f"- config_name: {name}\n  data_files:\n" + "".join(
        f"    - split: {split}\n      path:\n" + "".join(f'        - "data/{m}/{split}.jsonl"\n' for m in models) for split in ("train", "test"))
    for name, models in (("default", PKU_MODELS), ("alpaca-7b", PKU_MODELS[:1]), ("alpaca2-7b", PKU_MODELS[1:2]), ("alpaca3-8b", PKU_MODELS[2:]))
) + "license: cc-by-nc-4.0\n---\n# PKU-SafeRLHF (local hub-cache fixture: real rows, Alpaca-7B test split head)\n"
TQA_CARD = ("---\nlicense: apache-2.0\nconfigs:\n- config_name: generation\n  data_files:\n  - split: validation\n    path: generation/validation-*\n"
            "- config_name: multiple_choice\n  data_files:\n  - split: validation\n    path: multiple_choice/validation-*\n---\n# truthful_qa\n")
HH_CARD = "---\nlicense: mit\n---\n"


def _pku_files(data_dir: Path, change_first_label: bool = False) -> dict[str, bytes]:
    lines = (data_dir / "pku_saferlhf" / "alpaca7b_test_head.jsonl").read_bytes().splitlines(keepends=True)
    if change_first_label:  # the newer commit: row 0's better response flipped
        rec = json.loads(lines[0])
        rec["better_response_id"] = 1 - rec["better_response_id"]
        lines[0] = (json.dumps(rec) + "\n").encode()
    files, at = {"README.md": PKU_CARD.encode()}, 0
    for model in PKU_MODELS:
        for split, n in PKU_ROWS.items():
            files[f"data/{model}/{split}.jsonl"] = b"".join(lines[at:at + n])
            at += n
    return files


def _parquet(rows: list[dict], schema) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    return buf.getvalue()


def _tqa_files(data_dir: Path) -> dict[str, bytes]:
    import pyarrow as pa

    folder = data_dir / "truthfulqa"
    with open(folder / "TruthfulQA.csv", encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))[:TQA_QUESTIONS]
    mc = {e["question"].strip(): e for e in json.loads((folder / "data" / "mc_task.json").read_text(encoding="utf-8"))}
    split = lambda s: [a.strip() for a in s.split(";") if a.strip()]  # noqa: E731
    gen = [{"type": r["Type"], "category": r["Category"], "question": r["Question"], "best_answer": r["Best Answer"],
            "correct_answers": split(r["Correct Answers"]), "incorrect_answers": split(r["Incorrect Answers"]), "source": r["Source"]} for r in rows]
    targets = pa.struct([("choices", pa.list_(pa.string())), ("labels", pa.list_(pa.int32()))])
    mcr = [{"question": r["Question"], **{k: {"choices": list(mc[r["Question"].strip()][k]), "labels": list(mc[r["Question"].strip()][k].values())}
                                          for k in ("mc1_targets", "mc2_targets")}} for r in rows if r["Question"].strip() in mc]
    s = pa.string()
    return {"README.md": TQA_CARD.encode(),
            "generation/validation-00000-of-00001.parquet": _parquet(gen, pa.schema([("type", s), ("category", s), ("question", s), ("best_answer", s),
                                                                                      ("correct_answers", pa.list_(s)), ("incorrect_answers", pa.list_(s)), ("source", s)])),
            "multiple_choice/validation-00000-of-00001.parquet": _parquet(mcr, pa.schema([("question", s), ("mc1_targets", targets), ("mc2_targets", targets)]))}


def _hh_files(data_dir: Path) -> dict[str, bytes]:
    with gzip.open(data_dir / "hh_rlhf" / "harmless-base" / "test.jsonl.gz", "rb") as fh:
        lines = [next(fh) for _ in range(sum(HH_ROWS.values()))]
    files, at = {"README.md": HH_CARD.encode()}, 0
    for split, n in HH_ROWS.items():
        files[f"harmless-base/{split}.jsonl.gz"] = gzip.compress(b"".join(lines[at:at + n]), mtime=0)
        at += n
    return files


@pytest.fixture(scope="module")
def hub_home(tmp_path_factory, data_dir) -> Path:
    """HF_HOME with hub/ holding the three repositories at their pinned commits (and PKU's newer `main`)."""
    home = tmp_path_factory.mktemp("hf-home")
    cache = home / "hub"
    add_snapshot(cache, pku_saferlhf.HUB_ID, pku_saferlhf.HUB_REVISION, _pku_files(data_dir))
    add_snapshot(cache, pku_saferlhf.HUB_ID, PKU_NEWER, _pku_files(data_dir, change_first_label=True), refs=("main",))
    add_snapshot(cache, truthfulqa.HUB_ID, truthfulqa.HUB_REVISION, _tqa_files(data_dir), refs=("main",))
    add_snapshot(cache, hh_rlhf.HUB_ID, hh_rlhf.HUB_REVISION, _hh_files(data_dir), refs=("main",))
    return home


@pytest.fixture()
def offline_hub(hub_home, monkeypatch):
    """This process reads `hub_home` offline (the libraries read their cache paths at import, so those are patched too)."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_home / "hub"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", hub_home / "datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    truthfulqa._load_cached.cache_clear()
    yield hub_home
    truthfulqa._load_cached.cache_clear()


def _cfg(dataset: str = "pku-saferlhf", *overrides: str):
    return load_config("tiny", list(overrides), dataset=dataset)


def _triples(pairs) -> set[tuple[str, str, str]]:
    return {(p.prompt, p.chosen, p.rejected) for p in pairs}


def test_pku_hub_rows_equal_the_same_files_read_locally(offline_hub):
    """`load_dataset` on the pinned snapshot yields exactly the pairs the local reader makes of those files."""
    counts: dict = {}
    reward, cost, split_prompts = pku_saferlhf.read_hub("default", pku_saferlhf.HUB_REVISION, counts)
    snap = offline_hub / "hub" / f"datasets--{pku_saferlhf.HUB_ID.replace('/', '--')}" / "snapshots" / pku_saferlhf.HUB_REVISION
    local_reward, local_cost = pku_saferlhf.read_local(snap / "data", {}, require_v1=True)
    assert _triples(reward) == _triples(local_reward) and _triples(cost) == _triples(local_cost)
    assert len(reward) == len(PKU_MODELS) * sum(PKU_ROWS.values())
    assert len(split_prompts["test"]) == len(PKU_MODELS) * PKU_ROWS["test"]
    one, _, _ = pku_saferlhf.read_hub("alpaca-7b", pku_saferlhf.HUB_REVISION, {})
    assert len(one) == sum(PKU_ROWS.values())  # the config picks its own files from the dataset card


def test_pku_bundle_names_the_revision_and_its_rows(offline_hub):
    """The pinned commit, not the newer `main`, supplies the rows; the source and rows hash follow the revision."""
    pinned = load_bundle(_cfg())
    assert pinned.source == f"hub:{pku_saferlhf.HUB_ID}@{pku_saferlhf.HUB_REVISION}/default"
    test_prompts = set(pku_saferlhf.read_hub("default", pku_saferlhf.HUB_REVISION, {})[2]["test"])
    for folds in (pinned.reward_pairs, pinned.cost_pairs):  # the hub's test prompts are evaluation prompts only
        assert not any(p.prompt in test_prompts for f in ("train", "scorer", "dual") for p in folds[f])
    assert pinned.counts["hub_test_pairs_moved_to_eval"] > 0
    newer = load_bundle(_cfg("pku-saferlhf", f"data.revision={PKU_NEWER}"))
    main = load_bundle(_cfg("pku-saferlhf", "data.revision=main"))
    assert newer.source.endswith(f"@{PKU_NEWER}/default")

    def h(b):
        return rows_hash(b, load_eval_prompts(_cfg(), b)[1])
    assert h(pinned) != h(newer) == h(main), "the changed label must change the rows hash; main resolves to the newer commit"


def test_truthfulqa_and_hh_rlhf_load_from_the_hub_cache(offline_hub, data_dir):
    qs = truthfulqa.load_questions()
    local = {q["question"]: q for q in truthfulqa.load_questions(str(data_dir))}
    assert len(qs) == TQA_QUESTIONS and all(q["mc1_targets"] for q in qs)
    for q in qs:  # the hub rows carry the same references and MC targets as the CSV + mc_task.json copies
        ref = local[q["question"]]
        assert (q["correct_answers"], q["incorrect_answers"], q["mc1_targets"], q["mc2_targets"]) == \
               (ref["correct_answers"], ref["incorrect_answers"], ref["mc1_targets"], ref["mc2_targets"])
    b = load_bundle(_cfg("truthfulqa"))
    assert b.source == f"hub:{truthfulqa.HUB_ID}@{truthfulqa.HUB_REVISION}"
    hh = load_bundle(_cfg("hh-rlhf-harmless", "data.max_train_pairs=0"))  # uncapped, to compare every pair
    assert hh.source == f"hub:{hh_rlhf.HUB_ID}@{hh_rlhf.HUB_REVISION}/{hh_rlhf.HUB_DIR}"
    hh_local = load_bundle(_cfg("hh-rlhf-harmless", "data.max_train_pairs=0", f"data.data_dir={data_dir}"))
    hub_pairs = _triples(p for ps in hh.cost_pairs.values() for p in ps)
    assert hub_pairs and hub_pairs <= _triples(p for ps in hh_local.cost_pairs.values() for p in ps)


@pytest.mark.parametrize("dataset", ["pku-saferlhf", "truthfulqa", "hh-rlhf-harmless"])
def test_a_revision_missing_from_the_cache_is_a_bench_error(offline_hub, dataset):
    with pytest.raises(BenchError, match="not in the local hub cache .* and HF_HUB_OFFLINE=1: pass --data-dir"):
        load_bundle(_cfg(dataset, "data.revision=no-such-tag"))


def _bench(hub_home: Path, runs: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("BENCH_DATA_DIR", "HF_HUB_CACHE", "HF_DATASETS_CACHE")}
    env.update(HF_HOME=str(hub_home), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "harness.cli", "run", "--profile", "tiny", "--runs-dir", str(runs), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_bench_run_reads_the_pinned_revision_from_the_hub_cache(hub_home, tmp_path, offline_hub):
    """`bench run --profile tiny` with no --data-dir and no BENCH_DATA_DIR: PKU-SafeRLHF and TruthfulQA's MC come from
    the hub cache through `load_dataset`; the record names the revision and hashes the rows it used."""
    # the trained judges read local copies; cheap annotators keep this a data-path test (the stages are tested elsewhere)
    scorers = ["--set", "scoring.reward=length", "--set", "scoring.cost=random", "--set", "scoring.judges.safety=random",
               "--set", "scoring.judges.reward=length", "--set", "scoring.judges.refusal=none", "--set", "scoring.judges.truthfulness=none"]
    out = _bench(hub_home, tmp_path / "runs", "--method", "sft", "--set", "generation.backend=hf", *scorers)
    assert out.returncode == 0, out.stderr[-3000:]
    (record_path,) = (tmp_path / "runs").glob("*/results.json")
    record = json.loads(record_path.read_text())
    assert record["data"]["source"] == f"hub:{pku_saferlhf.HUB_ID}@{pku_saferlhf.HUB_REVISION}/default"
    bundle = load_bundle(_cfg())
    assert record["data"]["rows_sha256"] == rows_hash(bundle, load_eval_prompts(_cfg(), bundle)[1])
    assert record["results"]["truthfulqa"]["n_questions"] == _cfg().eval.mc_max_questions  # MC targets from the hub parquet


def test_bench_run_with_a_wrong_revision_is_one_line_and_exit_2(hub_home, tmp_path):
    wrong = hashlib.sha1(b"a commit the cache does not hold").hexdigest()
    out = _bench(hub_home, tmp_path / "runs", "--set", f"data.revision={wrong}")
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-3000:]
    assert f"{pku_saferlhf.HUB_ID}@{wrong} is not in the local hub cache" in lines[0] and "Traceback" not in out.stderr
