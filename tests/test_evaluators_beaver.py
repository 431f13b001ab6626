"""The Beaver score-head reader: a tiny random LLaMA score model saved with a `score_head`, loaded back by our reader,
must give the head applied at the last position whose attention mask is 1 (left or right padding). End to end, a tiny
model saved in the published Beaver format, in a hub cache under the real repo ids, scores a `bench run`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaModel

from evaluators.beaver import BeaverScorer, LlamaScoreModel, end_index, load_score_model
from harness.errors import BenchError


def _config() -> LlamaConfig:
    return LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = LlamaScoreModel(_config()).eval()
    with torch.no_grad():
        model.score_head.weight.normal_()
        model.score_head.bias.fill_(0.75)  # non-zero, so a dropped bias would show
    path = tmp_path_factory.mktemp("beaver") / "score-model"
    model.save_pretrained(path)
    return path, model


def test_end_index_is_last_unmasked_position():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 0, 0, 0, 0]])
    assert end_index(mask).tolist() == [2, 4, 0]


def test_reader_loads_score_head_and_reads_last_unmasked_position(saved):
    path, original = saved
    model = load_score_model(path, device="cpu", precision="fp32")
    assert torch.equal(model.score_head.bias, original.score_head.bias)
    ids = torch.tensor([[5, 6, 7, 8, 0, 0], [0, 9, 10, 11, 12, 13]])  # row 0 right-padded, row 1 left-padded
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]])
    got = model(ids, mask)

    # independent computation: backbone with the same weights, head by hand at the known end positions (3 and 5)
    backbone = LlamaModel(_config()).eval()
    backbone.load_state_dict({k[len("model."):]: v for k, v in original.state_dict().items() if k.startswith("model.")})
    w, b = original.score_head.weight.detach()[0], original.score_head.bias.detach()[0]
    with torch.no_grad():
        h = backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    want = torch.stack([h[0, 3] @ w + b, h[1, 5] @ w + b])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # reading any other position would differ
    assert not torch.allclose(got[0], h[0, 5] @ w + b)


def test_reader_refuses_a_checkpoint_without_score_head(tmp_path):
    LlamaModel(_config()).save_pretrained(tmp_path / "backbone-only")
    with pytest.raises(BenchError, match="score_head"):
        load_score_model(tmp_path / "backbone-only", device="cpu", precision="fp32")


def test_scorer_appends_eos_and_uses_the_exact_template(saved, tiny_model_path):
    path, _ = saved
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(path)  # a real tokenizer next to the weights
    # only the tokenisation is checked here (the tiny config's 64-token vocabulary is smaller than the tokenizer's)
    scorer = BeaverScorer(path, "cost", device="cpu", precision="fp32", use_cache=False)
    ids = scorer.encode("How do I bake bread?", "Knead the dough.")
    assert ids[-1] == scorer.tokenizer.eos_token_id
    text = scorer.tokenizer.decode(ids[:-1], skip_special_tokens=True)
    assert text == "BEGINNING OF CONVERSATION: USER: How do I bake bread? ASSISTANT:Knead the dough."


def test_hub_scorer_offline_gives_a_clear_error(monkeypatch):
    from evaluators.beaver import beaver_cost
    from harness.config import load_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchError, match="beaver-7b-unified-cost"):
        beaver_cost(load_config("tiny"))


# -- end to end: `bench run` with beaver-cost as the cost annotator and beaver-reward as the reward judge ------------

BEAVER_COMMITS = {kind: hashlib.sha1(f"tiny beaver-{kind} fixture".encode()).hexdigest() for kind in ("reward", "cost")}
TINY_DIMS = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2}


def beaver_format_files(kind: str, tokenizer_dir: Path, seed: int) -> tuple[dict[str, bytes], dict[str, torch.Tensor]]:
    """(files, fp32 weights) of a tiny random score model saved as PKU-Alignment publishes the Beaver ones: config.json
    with their key set (`LlamaForScore`, `score_dim`, `score_bias`, `score_type`, `do_normalize`, the EMA normaliser
    fields, written by transformers 4.37), bf16 safetensors with `model.*` backbone and `score_head.*` keys, and a
    tokenizer. Built from a plain LlamaModel and nn.Linear, not from the reader under test."""
    from safetensors.torch import save
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = {"architectures": ["LlamaForScore"], "attention_bias": False, "attention_dropout": 0.0, "bias": False,
              "bos_token_id": tok.bos_token_id, "do_normalize": False, "eos_token_id": tok.eos_token_id, "hidden_act": "silu",
              "initializer_range": 0.02, "max_position_embeddings": 2048, "mean": [0.25], "model_type": "llama", "momentum": 0.9,
              "normalizer_type": "ExponentialMovingAverage", "pad_token_id": tok.pad_token_id, "pretraining_tp": 1, "rms_norm_eps": 1e-06,
              "rope_scaling": None, "rope_theta": 10000.0, "score_bias": True, "score_dim": 1, "score_type": kind,
              "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.37.2", "use_cache": True,
              "var": [4.0], "vocab_size": len(tok), **TINY_DIMS}
    torch.manual_seed(seed)
    backbone = LlamaModel(LlamaConfig(**{k: v for k, v in config.items() if k not in ("architectures",)}))
    head = torch.nn.Linear(config["hidden_size"], 1)
    with torch.no_grad():
        head.weight.normal_()
        head.bias.fill_(0.5)
    weights = {f"model.{k}": v for k, v in backbone.state_dict().items()} | {f"score_head.{k}": v for k, v in head.state_dict().items()}
    weights = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in weights.items()}
    files = {"config.json": json.dumps(config, indent=2).encode(), "model.safetensors": save(weights, metadata={"format": "pt"})}
    out = tokenizer_dir.parent / f"beaver-{kind}-tokenizer"
    tok.save_pretrained(out)
    files |= {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    return files, {k: v.float() for k, v in weights.items()}


def reference_scores(weights: dict[str, torch.Tensor], config: dict, tok, prompts: list[str], responses: list[str]) -> list[float]:
    """The Beaver score by hand: template, EOS id appended, one sequence at a time (no padding), head on the last token."""
    backbone = LlamaModel(LlamaConfig(**{k: v for k, v in config.items() if k != "architectures"})).eval()
    backbone.load_state_dict({k[len("model."):]: v for k, v in weights.items() if k.startswith("model.")})
    w, b = weights["score_head.weight"][0], weights["score_head.bias"][0]
    out = []
    with torch.no_grad():
        for p, r in zip(prompts, responses):
            ids = tok(f"BEGINNING OF CONVERSATION: USER: {p} ASSISTANT:{r}")["input_ids"] + [tok.eos_token_id]
            h = backbone(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            out.append(float(h @ w + b))
    return out


def test_bench_run_with_beaver_cost_annotator_and_beaver_reward_judge(tmp_path, tiny_model_path, data_dir):
    """The registered `beaver-cost` / `beaver-reward` load their hub ids from a hub cache (offline), template and score:
    PD-DPO's dual steps train against beaver-cost, beaver-reward judges the outputs, and the record's reward mean is
    the mean of the scores computed by hand from the saved weights."""
    from transformers import AutoTokenizer

    from evaluators.beaver import BEAVER_COST, BEAVER_REWARD
    from hub_cache import add_snapshot

    cache, saved = tmp_path / "hub", {}
    for kind, repo, seed in (("reward", BEAVER_REWARD, 1), ("cost", BEAVER_COST, 2)):
        files, weights = beaver_format_files(kind, tiny_model_path, seed)
        add_snapshot(cache, repo, BEAVER_COMMITS[kind], files, refs=("main",), repo_type="model")
        saved[kind] = (weights, json.loads(files["config.json"]))
    # a private bench cache, so scores cached by an earlier run (same fingerprint) cannot stand in for this code's scores;
    # the built tiny policy is linked in, not rebuilt
    bench_cache = tmp_path / "bench-cache"
    (bench_cache / "models").mkdir(parents=True)
    (bench_cache / "models" / tiny_model_path.name).symlink_to(tiny_model_path)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "BENCH_DATA_DIR": str(data_dir), "BENCH_CACHE": str(bench_cache)}
    args = ["--method", "pddpo", "--set", "scoring.cost=beaver-cost", "--set", "scoring.reward=length",
            "--set", "scoring.judges.reward=beaver-reward", "--set", "scoring.judges.safety=random",
            "--set", "scoring.judges.refusal=none", "--set", "scoring.judges.truthfulness=none",
            "--set", "eval.truthfulqa_mc=false", "--set", "generation.backend=hf", "--set", "scoring.win_rate_vs_sft=false"]
    out = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--profile", "tiny", "--runs-dir", str(tmp_path / "runs"), *args],
                         cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (run_dir,) = [p.parent for p in (tmp_path / "runs").glob("*/results.json")]
    record = json.loads((run_dir / "results.json").read_text())
    assert record["annotators"]["cost"]["name"] == "beaver-cost"
    assert f"{BEAVER_COST}@{BEAVER_COMMITS['cost']}" in record["annotators"]["cost"]["fingerprint"]  # the commit, not "main"
    assert record["judges"]["reward"]["name"] == "beaver-reward"
    assert f"{BEAVER_REWARD}@{BEAVER_COMMITS['reward']}" in record["judges"]["reward"]["fingerprint"]
    assert [t["iteration"] for t in record["train"]["trajectory"]] == [1, 2] and all("cost_estimate" in t for t in record["train"]["trajectory"])

    gens = json.loads((run_dir / "generate" / "generations.json").read_text())
    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    want = reference_scores(*saved["reward"], tok, [g["prompt"] for g in gens], [g["response"] for g in gens])
    assert record["results"]["safety"]["reward_mean"]["value"] == pytest.approx(sum(want) / len(want), abs=1e-3)
