"""Training (TRL's `RewardTrainer` with Safe-RLHF's losses) and held-out evaluation of score models. Package overview:
`evaluators/score_models/__init__.py`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
from trl import RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference, suppress_seqcls_warning

from evaluators.baselines import LengthScorer, RandomScorer
from evaluators.losses import MU, cost_model_loss, cost_sign, reward_model_loss
from evaluators.score_models.scorer import (
    CARD,
    KINDS,
    ScoreModelScorer,
    ScoreModelSettings,
    encode,
    pairs_hash,
    resolve_encoder,
    settings_for,
    usable_pairs,
)
from harness.errors import BenchError
from harness.io import atomic_dir, versions, write_json
from harness.models import load_tokenizer, model_fingerprint, resolve_device

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.types import PreferencePair

log = logging.getLogger("bench")


# -- training -------------------------------------------------------------------------------------------------------


@dataclass
class SignCollator(DataCollatorForPreference):
    """TRL's preference collator ([all chosen; all rejected]) plus the cost signs s(y) of both responses."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call(examples)
        for key in ("chosen_sign", "rejected_sign"):
            if key in examples[0]:
                out[key] = torch.tensor([e[key] for e in examples], dtype=torch.float)
        return out


class ScoreModelTrainer(RewardTrainer):
    """`RewardTrainer` with Safe-RLHF's losses: `kind="reward"` (BT + μR²) or `kind="cost"` (BT + sign + μC²).

    The cost signs travel as two extra dataset columns (`chosen_sign`, `rejected_sign`), kept through TRL's column
    filter by the signature list, tensorised by `SignCollator`, and popped before the model call.
    """

    def __init__(self, *args: Any, kind: str = "reward", mu: float = MU, **kwargs: Any):
        if kind not in KINDS:
            raise ValueError(f"kind must be reward or cost, got {kind!r}")
        self.kind, self.mu = kind, mu
        super().__init__(*args, **kwargs)

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["chosen_ids", "rejected_ids", "chosen_sign", "rejected_sign", "length"]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        chosen_sign, rejected_sign = inputs.pop("chosen_sign", None), inputs.pop("rejected_sign", None)
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        chosen, rejected = outputs.logits[:, 0].float().chunk(2)
        if self.kind == "reward":
            loss = reward_model_loss(chosen, rejected, self.mu)
            correct = (chosen > rejected).float()
        else:
            if chosen_sign is None or rejected_sign is None:
                raise BenchError("cost-model training needs chosen_sign/rejected_sign columns (the safety labels)")
            loss = cost_model_loss(chosen, rejected, chosen_sign, rejected_sign, self.mu)
            correct = (rejected > chosen).float()
            signs = torch.cat([chosen_sign, rejected_sign])
            costs = torch.cat([chosen, rejected]).detach()
            known = signs != 0
            if known.any():
                self._metrics[mode]["sign_accuracy"].append(((costs[known] > 0) == (signs[known] > 0)).float().mean().item())
        with torch.no_grad():
            self._metrics[mode]["accuracy"].append(correct.mean().item())
            self._metrics[mode]["mean_score"].append(torch.cat([chosen, rejected]).mean().item())
        return (loss, outputs) if return_outputs else loss


def reward_config(settings: ScoreModelSettings, output_dir: Path, device: str, precision: str = "auto") -> RewardConfig:
    on_gpu = device.startswith("cuda")
    return RewardConfig(
        output_dir=str(output_dir),
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        warmup_steps=settings.warmup_ratio,  # transformers 5: a float < 1 is a ratio of total steps
        lr_scheduler_type=settings.lr_scheduler,
        weight_decay=settings.weight_decay,
        max_length=None,  # inputs are truncated by `encode`, never dropped (TRL would filter long pairs out)
        train_sampling_strategy="group_by_length",  # similar lengths per batch: far less padding on CPU
        length_column_name="length",
        gradient_checkpointing=False,
        use_cpu=not on_gpu,
        bf16=on_gpu and precision in ("auto", "bf16"),
        seed=settings.seed,
        data_seed=settings.seed,
        report_to=[],
        save_strategy="no",
        logging_steps=max(1, settings.max_steps // 5) if settings.max_steps > 0 else 10,
        disable_tqdm=bool(os.environ.get("BENCH_QUIET")),
        dataloader_pin_memory=on_gpu,
    )


def reward_dataset(pairs: Sequence["PreferencePair"], tokenizer: Any, max_length: int):
    from datasets import Dataset

    rows = []
    for p in pairs:
        c, r = encode(tokenizer, p.prompt, p.chosen, max_length), encode(tokenizer, p.prompt, p.rejected, max_length)
        rows.append({"chosen_ids": c, "rejected_ids": r, "chosen_sign": cost_sign(p.chosen_safe),
                     "rejected_sign": cost_sign(p.rejected_safe), "length": max(len(c), len(r))})
    return Dataset.from_list(rows)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_encoder(encoder: str, device: str):
    from transformers import AutoModelForSequenceClassification

    path = resolve_encoder(encoder)
    tokenizer = load_tokenizer(path, padding_side="right")
    try:
        with suppress_seqcls_warning(), quiet_transformers():  # the new head is "missing" by design
            model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=torch.float32)
    except OSError as exc:
        raise BenchError(f"cannot load encoder '{encoder}': {str(exc).splitlines()[0]} (offline? pass a local folder)") from exc
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer, path


def train_score_model(
    kind: str,
    pairs: Sequence["PreferencePair"],
    out_dir: str | Path,
    cfg: "RunConfig",
    encoder: str | None = None,
    eval_pairs: Sequence["PreferencePair"] | None = None,
    settings: ScoreModelSettings | None = None,
    data_source: str = "",
    name: str | None = None,
) -> ScoreModelScorer:
    """Train a `kind` score model on `pairs`, save model + tokenizer + `card.json` to `out_dir`, return its Scorer.

    Reward pairs: chosen = more helpful. Cost pairs: chosen = SAFER (the rejected response learns the higher cost);
    their `chosen_safe`/`rejected_safe` labels feed the sign term. `eval_pairs` (held out) give the accuracies
    recorded in the card. The folder appears atomically: a killed run leaves no half-written model.
    """
    from harness.datasets.common import cap, split_hash

    if kind not in KINDS:
        raise BenchError(f"score model kind must be reward or cost, got {kind!r}")
    settings = settings or settings_for(cfg)
    if encoder:
        settings = dataclasses.replace(settings, encoder=encoder)
    usable = usable_pairs(pairs)
    if not usable:
        raise BenchError(f"no usable {kind} pairs to train a score model on ({len(pairs)} given, all with identical responses or none): "
                         "check the dataset's scorer fold (`bench data`) or data.max_scorer_pairs")
    if kind == "cost" and not any(p.chosen_safe is not None or p.rejected_safe is not None for p in usable):
        log.warning("cost pairs carry no safety labels: training without the sign term, so cost > 0 will not mean unsafe")
    out_dir = Path(out_dir)
    device = resolve_device(cfg.device)
    torch.manual_seed(settings.seed)
    model, tokenizer, enc_path = load_encoder(settings.encoder, device)
    dataset = reward_dataset(usable, tokenizer, settings.max_length)

    with atomic_dir(out_dir) as tmp:  # the folder appears complete or not at all
        trainer = ScoreModelTrainer(
            model=model, args=reward_config(settings, tmp / "trainer", device, cfg.train.precision), train_dataset=dataset,
            processing_class=tokenizer, data_collator=SignCollator(pad_token_id=tokenizer.pad_token_id), kind=kind, mu=settings.mu,
        )
        if os.environ.get("BENCH_QUIET"):
            from transformers import PrinterCallback

            trainer.remove_callback(PrinterCallback)  # no per-step dicts on stdout in quiet mode
        start = time.time()
        out = trainer.train()
        wall = time.time() - start
        history = [h for h in trainer.state.log_history if "loss" in h]
        shutil.rmtree(tmp / "trainer", ignore_errors=True)

        model = trainer.model.to(torch.float32)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        card = {
            "name": name or out_dir.name, "kind": kind, "template": "beaver", "max_length": settings.max_length,
            "encoder": settings.encoder, "encoder_path": str(enc_path), "encoder_fingerprint": model_fingerprint(enc_path),
            "dataset": cfg.dataset, "data_source": data_source, "n_pairs": len(usable), "n_pairs_given": len(pairs),
            "pairs_hash": pairs_hash(usable), "prompt_split_hash": split_hash([p.prompt for p in usable]),
            "settings": dataclasses.asdict(settings),
            "train": {"steps": trainer.state.global_step, "train_loss": out.training_loss, "wall_s": round(wall, 1), "device": device,
                      "log": history[-20:]},
            "losses": "Safe-RLHF: reward = BT + mu*mean(R^2); cost = BT + sign terms + mu*mean(C^2) (docs/methods.md §3.2-3.3)",
            "versions": versions(),
        }
        write_json(tmp / CARD, card)
    del trainer, model

    scorer = ScoreModelScorer(out_dir, kind=kind, device=device, batch_size=settings.eval_batch_size, precision=cfg.train.precision)
    if eval_pairs:
        held_out = cap(usable_pairs(eval_pairs), settings.max_eval_pairs)
        card["eval"] = evaluate_score_model(scorer, held_out, kind, seed=settings.seed)
        card["eval"]["prompt_split_hash"] = split_hash([p.prompt for p in held_out])
        write_json(out_dir / CARD, card)
        scorer.card = card
    return scorer


# -- evaluation -----------------------------------------------------------------------------------------------------


def pair_scores(scorer: Any, pairs: Sequence["PreferencePair"]) -> tuple[list[float], list[float]]:
    """(scores of chosen, scores of rejected), in one `score` call so the scorer batches all of them."""
    prompts = [p.prompt for p in pairs]
    scores = scorer.score(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    return scores[: len(pairs)], scores[len(pairs) :]


def pair_accuracies(scorer: Any, pairs: Sequence["PreferencePair"], kind: str, n_boot: int, seed: int) -> dict[str, Any]:
    import numpy as np

    from evaluators.metrics import bootstrap_ci

    chosen, rejected = (np.asarray(x, dtype=float) for x in pair_scores(scorer, pairs))
    better, worse = (chosen, rejected) if kind == "reward" else (rejected, chosen)  # cost: rejected is less safe
    correct = np.where(better == worse, 0.5, (better > worse).astype(float))
    out: dict[str, Any] = {"pairwise_accuracy": bootstrap_ci(correct, n_boot, seed),
                           "score_mean_chosen": float(chosen.mean()), "score_mean_rejected": float(rejected.mean())}
    if kind == "cost":
        labels = [(s, p.chosen_safe) for s, p in zip(chosen, pairs)] + [(s, p.rejected_safe) for s, p in zip(rejected, pairs)]
        agree = [float((s > 0) == (not safe)) for s, safe in labels if safe is not None]
        out["sign_accuracy"] = bootstrap_ci(agree, n_boot, seed)
        out["n_labelled_responses"] = len(agree)
    return out


def evaluate_score_model(scorer: Any, pairs: Sequence["PreferencePair"], kind: str, n_boot: int = 1000, seed: int = 0,
                         baselines: bool = True) -> dict[str, Any]:
    """Held-out pairwise accuracy (ties count ½) and, for cost, sign accuracy (cost > 0 ⇔ labelled unsafe), with
    bootstrap CIs, next to the trivial baselines on the same pairs: response length, a seeded random score and,
    for the sign, the majority label."""
    if kind not in KINDS:
        raise BenchError(f"kind must be reward or cost, got {kind!r}")
    pairs = usable_pairs(pairs)
    if not pairs:
        raise BenchError(f"no held-out {kind} pairs to evaluate on")
    out: dict[str, Any] = {"kind": kind, "scorer": getattr(scorer, "name", "?"), "n_pairs": len(pairs), **pair_accuracies(scorer, pairs, kind, n_boot, seed)}
    if baselines:
        out["baselines"] = {
            "length": pair_accuracies(LengthScorer(kind=kind), pairs, kind, n_boot, seed),
            "random": pair_accuracies(RandomScorer(seed=seed, kind=kind), pairs, kind, n_boot, seed),
        }
        if kind == "cost":
            labels = [s for p in pairs for s in (p.chosen_safe, p.rejected_safe) if s is not None]
            unsafe = sum(1 for s in labels if not s) / len(labels) if labels else float("nan")
            out["baselines"]["majority_sign"] = {"sign_accuracy": max(unsafe, 1 - unsafe), "unsafe_fraction": unsafe}
    return out
