"""The Beaver score-head reader: a tiny random LLaMA score model saved with a `score_head`, loaded back by our reader,
must give the head applied at the last position whose attention mask is 1 (left or right padding)."""

from __future__ import annotations

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
