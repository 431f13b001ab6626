"""One DPO run, the way every DPO-family method needs it: `train_dpo(pairs, init=, ref=, beta=, ...) -> out_dir`.

A thin wrapper over TRL 1.16's `DPOTrainer` (docs/methods.md §10):

- **Reference.** `ref=None` means "the init checkpoint"; any other reference (PD-DPO's π_r̂ while warm-starting
  from π_{k-1}) is passed to TRL explicitly. Reference log-probs are always precomputed once
  (`precompute_ref_log_probs=True`), so the reference is released before the first optimiser step. With `ref=None`
  TRL computes them from the policy's *untouched in-memory weights* in `__init__` (ecosystem §1.2 row 3), which is
  the init checkpoint itself; TRL's silent reload from `config._name_or_path` only happens without precompute,
  which this wrapper never uses. `tests/test_dpo.py` checks both cases against `policy_logps`.
- **Reference cache.** TRL's own precompute cache never hits for in-memory datasets (datasets gives them a random
  cache-file name), so `BenchDPOTrainer` caches the reference log-probs itself, keyed by (hash of the reference
  weights, tokenised pairs, truncation). PD-DPO's K primal steps share π_r̂ and D_c, so π_r̂ runs on D_c once.
- **Margins.** An optional per-pair additive term inside the sigmoid (SafeDPO's `−(u_l − u_w)·Δ`, O-PD-DPO's
  bonus): the subclass carries a `margin` column through TRL's column filter and collator and computes the loss
  with `harness.training.losses.dpo_loss`. Without margins the stock TRL loss runs.
- **LM head.** Every log-prob the trainer takes (policy, reference precompute, margin loss) goes through the chunked
  head of `harness.training.logprobs.ChunkedHeadMixin`: response positions only, a few hundred tokens per tile, no
  full-vocabulary logits (`train.chunked_logps`; false keeps TRL 1.16's fused head, which tiles 4,096 × 32,768 on CPU).
- **Output.** The trained (LoRA-merged) model and tokenizer are written atomically to `out_dir` with a
  `bench_train.json` record (`harness.io.save_model_atomic`); a finished `out_dir` with the same inputs is reused
  (resume).

Log-probs and features outside training (`sequence_logprobs`, `policy_logps`, `response_features`) live in
`harness/training/logprobs.py`, tokenised the same way; they are re-exported here for old imports.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from trl import DPOConfig, DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from harness.training.artifacts import lookup, materialise, publish, read_entry
from harness.errors import BenchError
from harness.io import TRAIN_RECORD, atomic_path, discard_damaged, save_model_atomic, write_json
from harness.training.learning import active_probe
from harness.training.losses import dpo_loss
from harness.models import cache_dir, load_causal_lm, load_tokenizer, model_fingerprint, prompt_text, release_memory
from harness.monitor import note_reuse, phase
from harness.training.logprobs import ChunkedHeadMixin, policy_logps, response_features, sequence_logprobs  # noqa: F401  (re-exported: old import path)
from harness.training.losses import LOGP_CHUNK_TOKENS

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from harness.config import RunConfig
    from harness.types import PreferencePair

log = logging.getLogger("bench")


# -- data ---------------------------------------------------------------------------------------------------------


def usable_pairs(pairs: Sequence["PreferencePair"], margins: Sequence[float] | None = None) -> tuple[list[int], int]:
    """Indices of pairs DPO can learn from: chosen and rejected must differ (docs/methods.md §8). (kept, dropped)."""
    if margins is not None and len(margins) != len(pairs):
        raise BenchError(f"train_dpo: {len(margins)} margins for {len(pairs)} pairs (one margin per pair)")
    keep = [i for i, p in enumerate(pairs) if p.chosen.strip() != p.rejected.strip()]
    return keep, len(pairs) - len(keep)


def preference_dataset(pairs: Sequence["PreferencePair"], tokenizer: "PreTrainedTokenizerBase", cfg: "RunConfig",
                       margins: Sequence[float] | None = None):
    """A `datasets.Dataset` with prompt/chosen/rejected (+ margin) in TRL's non-conversational format."""
    from datasets import Dataset

    keep, _ = usable_pairs(pairs, margins)
    if not keep:
        raise BenchError("train_dpo: no usable preference pairs (every pair is empty or has chosen == rejected)")
    rows: dict[str, list[Any]] = {
        "prompt": [prompt_text(tokenizer, pairs[i].prompt, cfg) for i in keep],
        "chosen": [pairs[i].chosen for i in keep],
        "rejected": [pairs[i].rejected for i in keep],
    }
    if margins is not None:
        rows["margin"] = [float(margins[i]) for i in keep]
    return Dataset.from_dict(rows)


# -- trainer ------------------------------------------------------------------------------------------------------


def _read_ref_entry(path: Path, key: str, n: int) -> dict[str, Any] | None:
    """A cached reference log-prob entry for `key` with `n` finite values per side; a damaged, truncated or foreign
    entry is discarded with one warning (and recomputed by the caller)."""
    if not path.exists():
        return None
    try:
        entry = torch.load(path, weights_only=True)
        ok = (entry.get("key") == key and all(entry[s].shape == (n,) and bool(torch.isfinite(entry[s]).all()) for s in ("chosen", "rejected")))
        if not ok:
            raise ValueError("written for another key, or a wrong number of values")
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types for a damaged file
        discard_damaged(path, f"{type(exc).__name__}: {str(exc)[:100]}", "reference log-prob cache entry")
        return None
    return entry


@dataclass
class MarginCollator(DataCollatorForPreference):
    """TRL's preference collator plus the optional per-pair `margin` column (ecosystem §1.4 step 2)."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call(examples)
        if "margin" in examples[0]:
            out["margin"] = torch.tensor([float(e["margin"]) for e in examples], dtype=torch.float32)
        return out


class BenchDPOTrainer(ChunkedHeadMixin, DPOTrainer):
    """`DPOTrainer` with (1) an optional `margin` column whose loss is `harness.training.losses.dpo_loss`, (2) a
    reference log-prob cache that survives in-memory datasets and (3) the chunked LM head for every log-prob it takes,
    policy, reference and margin loss (`chunked_logps` tokens per chunk; None = TRL's head; see the module docstring)."""

    def __init__(self, *args: Any, ref_cache_dir: Path | None = None, **kwargs: Any):
        self.ref_cache_dir = ref_cache_dir  # read by _precompute_ref_logps, which runs inside super().__init__
        self.ref_cache_hits = 0
        super().__init__(*args, **kwargs)

    def _set_signature_columns_if_needed(self) -> None:  # ecosystem §1.4 step 1
        super()._set_signature_columns_if_needed()
        if "margin" not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, "margin"]

    def compute_ref_log_probs(self, model, inputs):  # the precompute pass must not forward `margin` to the model
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != "margin"})

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        self._install_chunked_head()  # runs inside TRL's __init__: the reference pass scores through the chunked head too
        if self.ref_cache_dir is None:
            return self._precompute(dataset, name, batch_size)
        h = hashlib.sha256()
        # The reference pass runs under the trainer's autocast, so a bf16/fp16 entry is another entry (fp32 keys unchanged).
        mixed = ["bf16"] if self.args.bf16 else ["fp16"] if self.args.fp16 else []
        h.update(json.dumps([self._precompute_model_hash, self.args.max_length, self.args.truncation_mode, self.ld_alpha, *mixed]).encode())
        for col in ("prompt_ids", "chosen_ids", "rejected_ids"):
            h.update(json.dumps([list(ids) for ids in dataset[col]]).encode())
        key = h.hexdigest()
        path = Path(self.ref_cache_dir) / f"{key[:32]}.v2.pt"  # v2: entries carry their full key
        cached = _read_ref_entry(path, key, len(dataset))
        if cached is not None:
            self.ref_cache_hits += 1
            log.info("reference log-probs for %s (%d pairs) reused from %s", name, len(dataset), path)
            note_reuse("ref-logps", pairs=len(dataset), source=str(path))
            return dataset.add_column("ref_chosen_logps", cached["chosen"].tolist()).add_column(
                "ref_rejected_logps", cached["rejected"].tolist())
        out = self._precompute(dataset, name, batch_size)
        with atomic_path(path) as tmp:
            torch.save({"key": key, "chosen": torch.tensor(list(out["ref_chosen_logps"])),
                        "rejected": torch.tensor(list(out["ref_rejected_logps"]))}, tmp)
        return out

    def _precompute(self, dataset, name: str, batch_size: int):
        """TRL's precompute, except under data parallelism: TRL 1.16 writes the columns to a cache file in rank 0's
        temporary folder and reads it back on every rank, but an in-memory dataset's temporary folder is per process,
        so other ranks fail to find it. There every rank computes its share, gathers all of it in dataset order
        (`gather_for_metrics` drops the padding duplicates) and attaches the columns itself. Under DeepSpeed (DDP's
        problem too: seen with ZeRO-2/3 on 2 CPU processes) the policy is scored through TRL's own inference engine,
        which places ZeRO-2 parameters and gathers ZeRO-3 shards."""
        if self.accelerator.num_processes == 1:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        from torch.utils.data import DataLoader

        loader = self.accelerator.prepare(DataLoader(dataset, batch_size=batch_size, collate_fn=self.data_collator, shuffle=False))
        model = self.ref_model or self.model
        if self.ref_model is None and self.is_deepspeed_enabled:  # as TRL 1.16's _precompute_ref_logps, built once
            if self._precompute_engine is None:
                from trl.models.utils import prepare_deepspeed

                self._precompute_engine = prepare_deepspeed(self.model, self.accelerator)
            model = self._precompute_engine
        chosen, rejected = [], []
        for batch in loader:
            c, r = self.accelerator.gather_for_metrics(self.compute_ref_log_probs(model, batch))
            chosen.append(c.cpu())
            rejected.append(r.cpu())
        return dataset.add_column("ref_chosen_logps", torch.cat(chosen).tolist()).add_column(
            "ref_rejected_logps", torch.cat(rejected).tolist())

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        margin = inputs.pop("margin", None)  # ecosystem §1.4 step 3: TRL would forward it to model(...)
        if margin is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if return_outputs:
            raise NotImplementedError("margin DPO does not return model outputs")
        return self.margin_loss(model, inputs, margin)

    def margin_loss(self, model, inputs: dict[str, torch.Tensor], margin: torch.Tensor) -> torch.Tensor:
        """Policy log-probs from the fused LM head (ours or TRL's: no full logits), loss from `harness.training.losses.dpo_loss`."""
        if not self.precompute_ref_logps:
            raise BenchError("margin DPO expects precomputed reference log-probs (precompute_ref_log_probs=True)")
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], labels=labels,
                    fused_lm_head=True, use_cache=False)
        logps = out.log_probs[:, -(completion_mask.size(1) - 1) :].sum(dim=1)  # masked positions are exactly 0
        chosen, rejected = logps.chunk(2, dim=0)
        loss, chosen_rewards, rejected_rewards = dpo_loss(
            chosen, rejected, inputs["ref_chosen_logps"], inputs["ref_rejected_logps"], self.beta, margin)
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        self._metrics[mode]["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        self._metrics[mode]["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        self._metrics[mode]["rewards/accuracies"].append(gather((chosen_rewards > rejected_rewards).float()).mean().item())
        self._metrics[mode]["rewards/margins"].append(gather(chosen_rewards - rejected_rewards).mean().item())
        self._metrics[mode]["margin"].append(gather(margin).mean().item())
        return loss.mean()


# -- the wrapper --------------------------------------------------------------------------------------------------


def _same_folder(a: Any, b: Any) -> bool:
    """Both are saved folders and the same one (so the same weights)."""
    if not (isinstance(a, (str, Path)) and isinstance(b, (str, Path))):
        return False
    pa, pb = Path(str(a)), Path(str(b))
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _identity(model: Any) -> str | None:
    """A stable identity for resume keys: the fingerprint of a saved folder; None for in-memory models."""
    if isinstance(model, (str, Path)) and Path(str(model)).exists():
        return model_fingerprint(model)
    return None


def dpo_config(cfg: "RunConfig", beta: float, output_dir: Path, device: str) -> DPOConfig:
    """`DPOConfig` from the run's shared `train` section (one stated regime for every method)."""
    return DPOConfig(**dpo_config_kwargs(cfg, beta, output_dir, device))


def dpo_config_kwargs(cfg: "RunConfig", beta: float, output_dir: Path, device: str) -> dict[str, Any]:
    """The `DPOConfig` arguments, as a plain dict (checked against DeepSpeed presets without building a GPU config)."""
    t = cfg.train
    on_gpu = device.startswith("cuda")
    return dict(
        output_dir=str(output_dir),
        beta=beta,
        learning_rate=t.learning_rate,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_length=t.max_length,
        warmup_steps=t.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio of total steps
        lr_scheduler_type=t.lr_scheduler,
        weight_decay=t.weight_decay,
        gradient_checkpointing=t.gradient_checkpointing,
        use_cpu=not on_gpu,
        bf16=t.precision == "bf16" or (on_gpu and t.precision == "auto"),  # on CPU: torch.autocast(cpu, bf16), reference log-probs too
        precompute_ref_log_probs=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=bool(os.environ.get("BENCH_QUIET")),
        dataloader_pin_memory=on_gpu,
    )


def lora_config(cfg: "RunConfig") -> Any:
    """The `peft.LoraConfig` of `cfg.train` (every linear layer), or None when `train.lora` is off."""
    if not cfg.train.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.train.lora_r, lora_alpha=cfg.train.lora_alpha, target_modules="all-linear", task_type="CAUSAL_LM")


def save_trained(trainer: Any, tokenizer: Any, cfg: "RunConfig", out_dir: Path, record: dict[str, Any], kind: str, scratch: Path,
                 before_save: Callable[[Any, dict[str, Any]], None] | None = None) -> None:
    """A finished TRL trainer's model saved atomically to `out_dir` with `record` (plus `params_trained`, counted before
    a LoRA merge), the trainer's scratch folder removed, and the folder published to the store under (`kind`,
    `record["key"]`) when it has a key. `before_save(model, record)` runs on the merged model first (held-out checks)."""
    trained = trainer.accelerator.unwrap_model(trainer.model)
    record["params_trained"] = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    if cfg.train.lora:
        trained = trained.merge_and_unload()
    if before_save is not None:
        before_save(trained, record)
    save_model_atomic(trained, tokenizer, out_dir, record)
    shutil.rmtree(scratch, ignore_errors=True)
    if record.get("key"):
        publish(kind, record["key"], out_dir, {"run_name": record["run_name"], "seconds": record["seconds"]})


def dpo_trainer(model: "PreTrainedModel", ref_model: "PreTrainedModel | None", dataset: Any, tokenizer: Any, cfg: "RunConfig",
                beta: float, output_dir: Path, device: str, ref_cache_dir: Path | None = None) -> BenchDPOTrainer:
    """The harness's trainer exactly as `train_dpo` builds it (LoRA per `cfg.train`, margin collator, reference
    log-probs precomputed and cached); `benchmarks/` times this very object against a stock `DPOTrainer`."""
    args = dpo_config(cfg, beta, output_dir, device)
    return BenchDPOTrainer(
        model=model, ref_model=ref_model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=lora_config(cfg),
        data_collator=MarginCollator(pad_token_id=tokenizer.pad_token_id, max_length=args.max_length, truncation_mode=args.truncation_mode),
        ref_cache_dir=ref_cache_dir if ref_cache_dir is not None else cache_dir() / "ref_logps",
        chunked_logps=LOGP_CHUNK_TOKENS if cfg.train.chunked_logps else None,
    )


def train_key(pairs: Sequence["PreferencePair"], margins: Sequence[float] | None, init_id: str | None, ref_id: str | None,
              beta: float, cfg: "RunConfig") -> str | None:
    """The content address of a DPO training: initial and reference weights' fingerprints, the exact pairs, the loss
    (margins, beta), the regime (`cfg.train`, template) and the seed. Never the run or method name: two methods asking
    for the same training get the same key (harness.training.artifacts). None for in-memory models (no stable identity)."""
    if init_id is None or ref_id is None:
        return None
    blob = json.dumps([[(p.prompt, p.chosen, p.rejected) for p in pairs], list(margins) if margins is not None else None,
                       init_id, ref_id, beta, asdict(cfg.train), cfg.seed, cfg.template, "dpo-v1"], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def read_train_record(path: str | Path) -> dict[str, Any]:
    """The `bench_train.json` a `train_dpo` output folder carries (loss, pairs used, reference, ...)."""
    return json.loads((Path(path) / TRAIN_RECORD).read_text())


def train_dpo(
    pairs: Sequence["PreferencePair"],
    *,
    init: "str | Path | PreTrainedModel",
    ref: "str | Path | PreTrainedModel | None",
    beta: float,
    out_dir: Path,
    cfg: "RunConfig",
    device: str,
    margins: Sequence[float] | None = None,
    run_name: str = "dpo",
    tokenizer: "PreTrainedTokenizerBase | None" = None,
    ref_cache_dir: Path | None = None,
    resume: bool = True,
) -> Path:
    """DPO from `init` against the frozen reference `ref` (None = `init`), saved to `out_dir`.

    `margins` (one per pair) adds a per-pair term inside the sigmoid; `tokenizer` is needed only when `init` is an
    in-memory model without a saved folder; `ref_cache_dir` (default: the user cache) stores reference log-probs.
    """
    if not beta > 0:
        raise BenchError(f"train_dpo: beta must be > 0 (got {beta})")
    out_dir = Path(out_dir)
    init_id = _identity(init)
    ref_id = init_id if ref is None else _identity(ref)
    key = train_key(pairs, margins, init_id, ref_id, beta, cfg)
    probe = active_probe(pairs)  # held-out learning check of this stage (harness/training/learning.py); None outside a run
    if resume and key:
        reused = reuse_training(key, out_dir, run_name)
        if reused is not None:
            if probe is not None:
                heldout_check_reused(probe, reused, init if ref is None else ref, ref_id, beta, run_name, device, tokenizer, ref_cache_dir)
            return reused

    from transformers import set_seed

    set_seed(cfg.seed)
    start = time.time()
    with phase(f"{run_name}/load", trim=True):
        tok_source = init if isinstance(init, (str, Path)) else getattr(init.config, "_name_or_path", None)
        tokenizer = tokenizer or load_tokenizer(tok_source)
        model = load_causal_lm(init, device)
        # A reference that is the init's own folder (PD-DPO's first primal step: init = ref = π_r̂) is not loaded a
        # second time: TRL then takes the reference log-probs from the policy's untouched weights (exact, as for ref=None).
        ref_model = None if ref is None or _same_folder(init, ref) else load_causal_lm(ref, device)
        if ref_model is not None:
            ref_model.eval()
        dataset = preference_dataset(pairs, tokenizer, cfg, margins)
        _, dropped = usable_pairs(pairs, margins)
    if probe is not None:  # the reference's held-out log-probs, while it is loaded (ref=None: the untouched init)
        with phase(f"{run_name}/heldout_ref", trim=True):
            probe.reference(ref_model if ref_model is not None else model, tokenizer, device, ref_id, ref_cache_dir)

    scratch = out_dir.with_name(f".{out_dir.name}.trainer{os.getpid()}")
    with phase(f"{run_name}/trainer_init+ref_logps", trim=True):
        trainer = dpo_trainer(model, ref_model, dataset, tokenizer, cfg, beta, scratch, device, ref_cache_dir)
        # The reference log-probs are columns now: release the reference before training (ecosystem §1.3).
        if trainer.ref_model is not None:
            if trainer.ref_model in trainer.accelerator._models:
                trainer.accelerator._models.remove(trainer.ref_model)
            trainer.ref_model = None
        del ref_model
        big = sum(p.numel() for p in model.parameters()) > 10_000_000  # TRL's patched forward makes models cyclic: gc frees them
        release_memory(collect=big)

    with phase(f"{run_name}/train_steps", trim=True):
        output = trainer.train()
    with phase(f"{run_name}/merge+save", trim=True):
        record = {
            "key": key, "run_name": run_name, "beta": beta, "pairs": len(dataset), "pairs_dropped_identical": dropped,
            "margins": margins is not None, "init": str(init) if isinstance(init, (str, Path)) else "<in-memory>",
            "reference": "init" if ref is None else (str(ref) if isinstance(ref, (str, Path)) else "<in-memory>"),
            "ref_cache_hits": trainer.ref_cache_hits, "train_loss": output.training_loss, "steps": output.global_step,
            "seconds": round(time.time() - start, 2), "log_history": trainer.state.log_history[-50:], "reused_from": None,
        }
        save_trained(trainer, tokenizer, cfg, out_dir, record, "dpo", scratch,
                     before_save=heldout_check_hook(probe, tokenizer, device, beta, run_name))
        del trainer, model
        release_memory(collect=big)
    return out_dir


def heldout_check_hook(probe: Any, tokenizer: Any, device: str, beta: float, run_name: str) -> Callable[[Any, dict[str, Any]], None] | None:
    """`save_trained`'s `before_save` for a stage with a held-out probe: the check on the merged model, kept in the
    training's record (None without a probe)."""
    if probe is None:
        return None

    def learning(trained: Any, rec: dict[str, Any]) -> None:
        with phase(f"{run_name}/heldout_check", trim=True):  # nested in merge+save: its share of that phase
            rec["learning"] = probe.finish(trained, tokenizer, device, beta, run_name)
    return learning


def heldout_check_reused(probe: Any, out_dir: Path, reference: Any, ref_id: str | None, beta: float, run_name: str, device: str,
                         tokenizer: Any = None, ref_cache_dir: Path | None = None) -> None:
    """The held-out check of a reused training: from its record when it was measured on the same pairs and β, else
    measured now on the saved model (and kept in its record for the next reuse)."""
    record = read_train_record(out_dir)
    if probe.reuse(record.get("learning"), beta, run_name):
        return
    probe.reference(reference, tokenizer, device, ref_id, ref_cache_dir)
    record["learning"] = probe.finish(out_dir, tokenizer, device, beta, run_name)
    write_json(out_dir / TRAIN_RECORD, record)


def reuse_training(key: str, out_dir: Path, run_name: str, kind: str = "dpo") -> Path | None:
    """`out_dir` filled with the finished training `key` (store kind `kind`: dpo, kto), from `out_dir` itself (resume)
    or from the shared store (any earlier run or method); None when it was never trained. The reuse is noted in the
    stage's record."""
    if (out_dir / TRAIN_RECORD).exists() and read_train_record(out_dir).get("key") == key:
        log.info("%s: reusing finished model at %s", run_name, out_dir)
        note_reuse(kind, name=run_name, key=key, source=str(out_dir), how="resume")
        return out_dir
    hit = lookup(kind, key)
    if hit is None:
        return None
    how = materialise(hit, out_dir)
    record = read_train_record(out_dir)
    record.update(run_name=run_name, reused_from=str(hit), trained_as=read_entry(hit).get("run_name"), reuse=how)
    write_json(out_dir / TRAIN_RECORD, record)
    log.info("%s: reusing the finished training %s (trained as %s) from %s", run_name, key, record["trained_as"], hit)
    note_reuse(kind, name=run_name, key=key, source=str(hit), trained_as=record["trained_as"], how=how,
               seconds_saved=record.get("seconds"))
    return out_dir
