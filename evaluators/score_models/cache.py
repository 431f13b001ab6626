"""The registered, cached score models (`minilm-reward`, `minilm-cost`): trained on the dataset's `scorer` fold on
first use, cached under `cache_dir()/scorers/`. Package overview: `evaluators/score_models/__init__.py`."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from evaluators.score_models.scorer import (
    CARD,
    ScoreModelScorer,
    ScoreModelSettings,
    pairs_hash,
    resolve_encoder,
    settings_for,
    usable_pairs,
)
from evaluators.score_models.train import train_score_model
from harness.errors import BenchError
from harness.io import checked_folder
from harness.models import cache_dir, model_fingerprint

if TYPE_CHECKING:
    from harness.config import RunConfig
    from harness.types import PreferencePair

log = logging.getLogger("bench")


# -- cached, dataset-trained scorers (the registry entries) --------------------------------------------------------


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock so parallel runs of a suite train a missing scorer once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def scorer_folds(cfg: "RunConfig", kind: str, bundle: Any = None) -> tuple[Any, list["PreferencePair"], list["PreferencePair"]]:
    """(bundle, training pairs = the `scorer` fold, held-out pairs = the `eval` fold) for `kind`.

    On PKU-SafeRLHF the annotators train on the `annotator` half of the scorer fold only: the other half trains the
    leaderboard judges (`harness.datasets.judge_data.scorer_role`, docs/judges.md)."""
    from harness.datasets import load_bundle
    from harness.datasets.judge_data import scorer_role

    bundle = bundle or load_bundle(cfg)
    folds = bundle.reward_pairs if kind == "reward" else bundle.cost_pairs
    train = list(folds.get("scorer", []))
    if bundle.name == "pku-saferlhf":
        train = [p for p in train if scorer_role(p.prompt) == "annotator"]
    return bundle, train, list(folds.get("eval", []))


_EVAL_ONLY = ("max_eval_pairs", "eval_batch_size")  # settings that do not change the trained weights


def weight_settings(settings: ScoreModelSettings) -> dict[str, Any]:
    """The settings that change the trained weights (a cache key's part)."""
    return {k: v for k, v in dataclasses.asdict(settings).items() if k not in _EVAL_ONLY}


def cached_model_dir(cfg: "RunConfig", kind: str, name: str, settings: ScoreModelSettings, bundle: Any, train_pairs: Sequence["PreferencePair"]) -> Path:
    """`cache_dir()/scorers/<name>-<hash>`: the hash covers dataset, data source, the scorer fold's pairs, the
    training settings and the encoder's weights, so any change trains a new model and old ones stay valid."""
    key = json.dumps({"kind": kind, "dataset": cfg.dataset, "source": bundle.source, "pairs": pairs_hash(usable_pairs(train_pairs)),
                      "settings": weight_settings(settings), "encoder": model_fingerprint(resolve_encoder(settings.encoder)),
                      "losses": "safe-rlhf-v1"}, sort_keys=True)
    return cache_dir() / "scorers" / f"{name}-{cfg.dataset}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def score_model_key(kind: str, pairs: Sequence["PreferencePair"], settings: ScoreModelSettings) -> str:
    """What decides a score model's weights: kind, the usable pairs, the training settings and the encoder's weights."""
    blob = json.dumps({"kind": kind, "pairs": pairs_hash(usable_pairs(pairs)), "settings": weight_settings(settings),
                       "encoder": model_fingerprint(resolve_encoder(settings.encoder)), "losses": "safe-rlhf-v1"}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def reusable_score_model(kind: str, pairs: Sequence["PreferencePair"], out_dir: str | Path, cfg: "RunConfig",
                         encoder: str | None = None, name: str | None = None, **kw: Any) -> ScoreModelScorer:
    """`train_score_model` through the content-addressed store (harness.training.artifacts): a method's own R/C trained on
    the same pairs with the same settings (Safe-RLHF and PPO-shaping) is trained once and hard-linked after."""
    from harness.training.artifacts import lookup, materialise, publish
    from harness.monitor import note_reuse

    settings = kw.pop("settings", None) or settings_for(cfg)
    if encoder:
        settings = dataclasses.replace(settings, encoder=encoder)
    key = score_model_key(kind, pairs, settings)
    hit = lookup("score-model", key)
    if hit is not None:
        how = materialise(hit, Path(out_dir))
        note_reuse("score-model", name=name or Path(out_dir).name, key=key, source=str(hit), how=how)
        return ScoreModelScorer(Path(out_dir), kind=kind, name=name, device=cfg.device, batch_size=settings.eval_batch_size,
                                precision=cfg.train.precision)
    scorer = train_score_model(kind, pairs, out_dir, cfg, settings=settings, name=name, **kw)
    publish("score-model", key, Path(out_dir), {"name": name})
    return scorer


def cached_score_model(kind: str, cfg: "RunConfig", name: str | None = None, settings: ScoreModelSettings | None = None,
                       retrain: bool = False, bundle: Any = None) -> ScoreModelScorer:
    """The dataset's score model, trained on its `scorer` fold on first use (evaluated on its `eval` fold)."""
    name = name or f"minilm-{kind}"
    settings = settings or settings_for(cfg)
    bundle, train_pairs, eval_pairs = scorer_folds(cfg, kind, bundle)
    if not usable_pairs(train_pairs):
        raise BenchError(f"{name}: dataset '{cfg.dataset}' has no {kind} pairs in its scorer fold ({bundle.source}); "
                         f"use another scorer (--set scoring.{'reward' if kind == 'reward' else 'cost'}=...) or more data")
    path = cached_model_dir(cfg, kind, name, settings, bundle, train_pairs)
    with file_lock(path.with_name(path.name + ".lock")):
        if retrain or not checked_folder(path, f"cached scorer '{name}'") or not (path / CARD).exists():
            log.info("training %s on %d %s pairs of %s (scorer fold) -> %s", name, len(train_pairs), kind, cfg.dataset, path)
            return train_score_model(kind, train_pairs, path, cfg, eval_pairs=eval_pairs, settings=settings,
                                     data_source=bundle.source, name=name)
    return ScoreModelScorer(path, kind=kind, name=name, device=cfg.device, batch_size=settings.eval_batch_size, precision=cfg.train.precision)


def minilm_reward(cfg: "RunConfig", **kw: Any) -> ScoreModelScorer:
    """Registered `minilm-reward`: MiniLM reward model trained on the dataset's scorer-fold reward pairs."""
    return cached_score_model("reward", cfg, name="minilm-reward", settings=settings_for(cfg, **kw))


def minilm_cost(cfg: "RunConfig", **kw: Any) -> ScoreModelScorer:
    """Registered `minilm-cost`: MiniLM cost model (cost > 0 ⇔ unsafe) trained on the scorer-fold cost pairs."""
    return cached_score_model("cost", cfg, name="minilm-cost", settings=settings_for(cfg, **kw))
