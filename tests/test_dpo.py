"""harness/training/dpo.py on the tiny-random model: our loss equals TRL's, the reference is the one asked for, the
reference log-prob cache hits, margins enter the loss, LoRA merges, and finished runs are reused."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from harness.config import load_config
from harness.training.dpo import (
    BenchDPOTrainer,
    MarginCollator,
    dpo_config,
    preference_dataset,
    read_train_record,
    train_dpo,
)
from harness.training.logprobs import policy_logps
from harness.training.losses import dpo_loss, sequence_logps
from harness.models import load_tokenizer, lora_trainable_params
from harness.types import PreferencePair

PAIRS = [
    PreferencePair(prompt=f"How should I store flour, case {i}?", chosen="Keep it dry in a sealed jar.", rejected="Leave it open in the rain.")
    for i in range(4)
] + [PreferencePair(prompt="Same answers?", chosen="Yes.", rejected="Yes.")]  # identical: dropped


@pytest.fixture(scope="module")
def cfg():
    return load_config("tiny", method="dpo-helpful")


def _params(path: Path) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _perturbed_copy(path: Path, out: Path) -> Path:
    """A reference that differs from the policy (so log-ratios are not all zero)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(out)
    load_tokenizer(path).save_pretrained(out)
    return out


def test_margin_loss_equals_trl_loss_and_hand_computation(tiny_model_path, cfg, tmp_path) -> None:
    from transformers import AutoModelForCausalLM
    from trl import DPOTrainer

    ref_path = _perturbed_copy(tiny_model_path, tmp_path / "ref")
    tok = load_tokenizer(tiny_model_path)
    margins = [0.0] * len(PAIRS)
    dataset = preference_dataset(PAIRS, tok, cfg, margins)
    assert len(dataset) == 4  # the identical pair is dropped
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_path), dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(str(ref_path), dtype=torch.float32).eval()
    args = dpo_config(cfg, beta=0.3, output_dir=tmp_path / "trainer", device="cpu")
    trainer = BenchDPOTrainer(model=model, ref_model=ref, args=args, train_dataset=dataset, processing_class=tok,
                              data_collator=MarginCollator(pad_token_id=tok.pad_token_id, max_length=args.max_length),
                              ref_cache_dir=tmp_path / "cache")
    batch = next(iter(trainer.get_train_dataloader()))
    assert "margin" in batch and batch["margin"].shape == (2,)
    model.eval()

    no_margin = {k: v for k, v in batch.items() if k != "margin"}
    with torch.no_grad():
        trl_loss = DPOTrainer.compute_loss(trainer, model, dict(no_margin)).item()
        ours = trainer.compute_loss(model, dict(batch)).item()  # margin column present (zeros): our path
        # by hand: plain logits -> sequence_logps -> dpo_loss
        ids, attn, mask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
        pol = sequence_logps(model(input_ids=ids, attention_mask=attn).logits, ids, mask)
        ref_lp = sequence_logps(ref(input_ids=ids, attention_mask=attn).logits, ids, mask)
        pc, pr = pol.chunk(2)
        rc, rr = ref_lp.chunk(2)
        hand = dpo_loss(pc, pr, rc, rr, beta=0.3)[0].mean().item()
        shifted = trainer.compute_loss(model, {**batch, "margin": torch.full((2,), 1.5)}).item()
        hand_shifted = dpo_loss(pc, pr, rc, rr, beta=0.3, margin=torch.full((2,), 1.5))[0].mean().item()
    # the precomputed reference column really is the explicit reference
    assert torch.allclose(batch["ref_chosen_logps"], rc.float(), atol=1e-4)
    assert torch.allclose(batch["ref_rejected_logps"], rr.float(), atol=1e-4)
    assert (pc - rc).abs().max() > 1e-3  # non-trivial log-ratios
    assert ours == pytest.approx(trl_loss, abs=1e-5)
    assert hand == pytest.approx(trl_loss, abs=1e-4)
    assert shifted == pytest.approx(hand_shifted, abs=1e-4) and shifted < ours
    assert not math.isclose(trl_loss, math.log(2), abs_tol=1e-4)


def test_train_dpo_reference_cache_resume(tiny_model_path, cfg, tmp_path) -> None:
    cache = tmp_path / "cache"
    before = _params(tiny_model_path)
    out = train_dpo(PAIRS, init=tiny_model_path, ref=None, beta=0.1, out_dir=tmp_path / "m1", cfg=cfg, device="cpu", ref_cache_dir=cache)
    assert out == tmp_path / "m1" and (out / "config.json").exists() and (out / "tokenizer_config.json").exists()
    rec = read_train_record(out)
    assert rec["pairs"] == 4 and rec["pairs_dropped_identical"] == 1 and rec["reference"] == "init" and rec["steps"] == 2
    assert (before - _params(out)).abs().max() > 1e-4  # parameters changed

    # ref=None means the init checkpoint: the cached reference log-probs are π_init's
    (cached,) = list(cache.glob("*.pt"))
    data = torch.load(cached)
    kept = PAIRS[:4]
    chosen, rejected = policy_logps(tiny_model_path, None, kept, cfg)
    assert torch.allclose(data["chosen"], chosen, atol=1e-4) and torch.allclose(data["rejected"], rejected, atol=1e-4)

    # explicit reference = the same weights -> cache hit (PD-DPO's K primal steps pay for π_r̂ once)
    out2 = train_dpo(PAIRS, init=out, ref=tiny_model_path, beta=0.1, out_dir=tmp_path / "m2", cfg=cfg, device="cpu", ref_cache_dir=cache)
    assert read_train_record(out2)["ref_cache_hits"] == 1 and len(list(cache.glob("*.pt"))) == 1

    # an explicit *different* reference is used, not the init checkpoint
    train_dpo(PAIRS, init=tiny_model_path, ref=out, beta=0.1, out_dir=tmp_path / "m3", cfg=cfg, device="cpu", ref_cache_dir=cache)
    assert len(list(cache.glob("*.pt"))) == 2
    new = [p for p in cache.glob("*.pt") if p != cached][0]
    c_out, r_out = policy_logps(out, None, kept, cfg)
    assert torch.allclose(torch.load(new)["chosen"], c_out, atol=1e-4)
    assert not torch.allclose(c_out, chosen, atol=1e-3)

    # resume: same inputs -> the finished folder is reused untouched
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert train_dpo(PAIRS, init=tiny_model_path, ref=None, beta=0.1, out_dir=tmp_path / "m1", cfg=cfg, device="cpu", ref_cache_dir=cache) == out
    assert (out / "model.safetensors").stat().st_mtime_ns == mtime
    assert not list(tmp_path.glob(".m*"))  # no temp folders left behind


def test_train_dpo_margins_and_lora(tiny_model_path, tmp_path) -> None:
    cfg = load_config("tiny", method="dpo-helpful", overrides=["train.lora=true", "train.lora_r=4", "train.lora_alpha=8"])
    out = train_dpo(PAIRS, init=tiny_model_path, ref=None, beta=0.1, out_dir=tmp_path / "lora", cfg=cfg, device="cpu",
                    margins=[0.5, -0.5, 0.0, 1.0, 0.0], ref_cache_dir=tmp_path / "cache")
    assert not (out / "adapter_config.json").exists()  # merged into a dense folder
    rec = read_train_record(out)
    batch_means = {(a + b) / 2 for i, a in enumerate([0.5, -0.5, 0.0, 1.0]) for b in [0.5, -0.5, 0.0, 1.0][i + 1 :]}
    assert rec["margins"] and any(abs(rec["log_history"][0]["margin"] - m) < 1e-6 for m in batch_means)
    assert (_params(tiny_model_path) - _params(out)).abs().max() > 1e-5
    # the run record's LoRA count (an empty meta-device copy) equals what the trainer really optimised
    assert rec["params_trained"] == lora_trainable_params(tiny_model_path, 4, 8) < _params(out).numel()
    with pytest.raises(Exception, match="margins"):
        train_dpo(PAIRS, init=tiny_model_path, ref=None, beta=0.1, out_dir=tmp_path / "bad", cfg=cfg, device="cpu", margins=[1.0])


def test_gradient_checkpointing_trains_lora_dpo_to_the_same_weights(tiny_model_path, tmp_path) -> None:
    """`train.gradient_checkpointing=true` (docs/memory.md: the DPO-family memory cut) is exact for LoRA DPO: the
    same pairs from the same init give the same loss and the same merged weights as without it, and the weights do
    move (gradients flow through the checkpointed layers to the adapters)."""
    outs, losses = {}, {}
    for ckpt in (False, True):
        cfg = load_config("tiny", method="dpo-helpful", overrides=["train.lora=true", "train.lora_r=4", "train.lora_alpha=8",
                                                                   f"train.gradient_checkpointing={str(ckpt).lower()}"])
        outs[ckpt] = train_dpo(PAIRS, init=tiny_model_path, ref=None, beta=0.1, out_dir=tmp_path / f"ckpt{ckpt}", cfg=cfg,
                               device="cpu", ref_cache_dir=tmp_path / "cache")
        losses[ckpt] = read_train_record(outs[ckpt])["train_loss"]
    before, plain, ckpt = _params(tiny_model_path), _params(outs[False]), _params(outs[True])
    assert (ckpt - before).abs().max() > 1e-5
    assert losses[True] == pytest.approx(losses[False], abs=1e-6)
    assert torch.allclose(ckpt, plain, atol=1e-6)


def test_chunked_head_sequence_logps_match_the_full_logits(tiny_model_path, cfg) -> None:
    """`model_sequence_logps` (backbone + chunked head, response positions only) equals the plain-logits path on the
    tiny Llama, and `sequence_logprobs` under `train.chunked_logps` equals it with the switch off."""
    from transformers import AutoModelForCausalLM

    from harness.training.logprobs import model_sequence_logps, scoring_batches, sequence_logprobs

    tok = load_tokenizer(tiny_model_path)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_path), dtype=torch.float32).eval()
    prompts, responses = [p.prompt for p in PAIRS], [p.chosen if i % 2 else p.rejected for i, p in enumerate(PAIRS)]
    ids, attn, mask = next(scoring_batches(tok, prompts, responses, cfg, len(PAIRS), "cpu"))
    assert attn.min() == 0  # padded rows in the batch
    with torch.no_grad():
        full = sequence_logps(model(input_ids=ids, attention_mask=attn).logits, ids, mask)
        chunked = model_sequence_logps(model, ids, attn, mask, chunk=5)
    torch.testing.assert_close(chunked, full, atol=1e-5, rtol=0)
    off = load_config("tiny", method="dpo-helpful", overrides=["train.chunked_logps=false"])
    torch.testing.assert_close(sequence_logprobs(model, tok, prompts, responses, cfg),
                               sequence_logprobs(model, tok, prompts, responses, off), atol=1e-5, rtol=0)


@pytest.mark.parametrize("lora", [False, True])
def test_dpo_loss_and_grads_agree_with_and_without_the_chunked_head(tiny_model_path, tmp_path, lora: bool) -> None:
    """The harness's trainer with the chunked head (a 7-token chunk, so batches span several) and with TRL's own fused
    head: the same reference columns, loss, margin loss, logged metrics and gradients (full fine-tuning: the tied
    head/embedding gets a gradient; LoRA: the head is frozen)."""
    from transformers import AutoModelForCausalLM

    from harness.training.dpo import dpo_trainer

    over = ["train.lora=true", "train.lora_r=4", "train.lora_alpha=8"] if lora else []
    ref_path = _perturbed_copy(tiny_model_path, tmp_path / "ref")
    tok = load_tokenizer(tiny_model_path)
    results = {}
    for chunked in (False, True):
        cfg = load_config("tiny", method="dpo-helpful", overrides=[*over, f"train.chunked_logps={str(chunked).lower()}"])
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model_path), dtype=torch.float32)
        ref = AutoModelForCausalLM.from_pretrained(str(ref_path), dtype=torch.float32).eval()
        trainer = dpo_trainer(model, ref, preference_dataset(PAIRS, tok, cfg, [0.0] * len(PAIRS)), tok, cfg, 0.3,
                              tmp_path / f"t{chunked}", "cpu", tmp_path / f"cache{chunked}")
        if chunked:  # a small chunk, so a batch's response tokens span several tiles
            trainer.chunked_logps = 7
            assert trainer._install_chunked_head()
        assert trainer.chunked_head is chunked
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, {k: v for k, v in batch.items() if k != "margin"})
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        with torch.no_grad():
            margin_loss = trainer.compute_loss(trainer.model, {**batch, "margin": torch.tensor([0.5, -1.0])})
        metrics = {k: v[0] for k, v in trainer._metrics["train"].items() if k != "num_tokens"}
        results[chunked] = (batch["ref_chosen_logps"], batch["ref_rejected_logps"], loss.item(), margin_loss.item(), metrics, grads)
    (rc0, rr0, l0, m0, met0, g0), (rc1, rr1, l1, m1, met1, g1) = results[False], results[True]
    torch.testing.assert_close(rc1, rc0, atol=1e-5, rtol=0)
    torch.testing.assert_close(rr1, rr0, atol=1e-5, rtol=0)
    assert l1 == pytest.approx(l0, abs=1e-6) and m1 == pytest.approx(m0, abs=1e-6) and m1 != pytest.approx(l1, abs=1e-3)
    assert met1.keys() == met0.keys() and all(met1[k] == pytest.approx(met0[k], abs=1e-5) for k in met0), (met0, met1)
    assert g1.keys() == g0.keys() and len(g0) > 0
    assert ("model.embed_tokens.weight" in g0) is not lora  # tied head: trained in full fine-tuning only
    for name in g0:
        # fp32 sums in another order (TRL's tiles against ours): measured up to 7e-6 on gradients of size ~1
        torch.testing.assert_close(g1[name], g0[name], atol=2e-5, rtol=1e-4, msg=name)


def test_kto_scores_through_the_chunked_head_with_trl_s_loss(tiny_model_path, tmp_path) -> None:
    """`bench_kto_trainer` (train_kto's trainer) swaps in the chunked head and gives TRL's own head's reference
    log-probs (completions and KL completions) and loss."""
    from transformers import AutoModelForCausalLM
    from trl import KTOConfig

    from harness.training.dpo import dpo_config_kwargs
    from harness.training.kto import bench_kto_trainer, kto_dataset, kto_examples

    pairs = [PreferencePair(prompt=p.prompt, chosen=p.chosen, rejected=p.rejected, chosen_safe=True, rejected_safe=False)
             for p in PAIRS[:4]]
    tok = load_tokenizer(tiny_model_path)
    out = {}
    for chunk in (None, 5):
        cfg = load_config("tiny", method="dpo-helpful", overrides=["train.batch_size=4"])
        model = AutoModelForCausalLM.from_pretrained(str(tiny_model_path), dtype=torch.float32)
        args = KTOConfig(**dpo_config_kwargs(cfg, 0.1, tmp_path / f"k{chunk}", "cpu"))
        trainer = bench_kto_trainer()(model=model, ref_model=None, args=args, train_dataset=kto_dataset(kto_examples(pairs), tok, cfg),
                                      processing_class=tok, chunked_logps=chunk)
        assert trainer.chunked_head is (chunk is not None)
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            out[chunk] = ({k: v for k, v in batch.items() if k.startswith("ref_")}, trainer.compute_loss(trainer.model, batch).item())
    (ref0, loss0), (ref1, loss1) = out[None], out[5]
    assert ref0.keys() == ref1.keys() and len(ref0) >= 2
    for k in ref0:
        torch.testing.assert_close(ref1[k], ref0[k], atol=1e-5, rtol=0)
    assert loss1 == pytest.approx(loss0, abs=1e-6)
