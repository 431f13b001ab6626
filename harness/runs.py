"""Runs: (method, dataset, model, config, seed) through the stages train -> generate -> score -> metrics.

Each stage writes its artifacts atomically under `runs/<run-id>/<stage>/` and then a `done.json` marker with
its wall time and memory. Running the same config again (same run id) or `bench run --resume RUN_ID` skips
finished stages; killing the process loses only the stage in progress. The results record
(docs/results-schema.md) goes to `runs/<run-id>/results.json` and the SQLite store.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import random
import shutil
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from harness.config import RunConfig, config_from_dict, dump_yaml, method_config
from harness.errors import BenchError
from harness.io import git_hash, read_json, versions, write_json, write_text  # noqa: F401  (re-exported: old import path)
from harness.monitor import StageMonitor
from harness.store import RESULTS_SCHEMA_VERSION, upsert_run
from harness.types import SamplingParams

log = logging.getLogger("bench")
STAGES = ("train", "generate", "score", "metrics")


# -- small utilities ------------------------------------------------------------------------------

def run_id(cfg: RunConfig) -> str:
    return f"{cfg.method}-{cfg.dataset}-{cfg.profile}-s{cfg.seed}-{cfg.fingerprint()}"


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Stage:
    """A stage folder with an atomic done-marker."""

    def __init__(self, run_dir: Path, name: str):
        self.name, self.dir = name, run_dir / name
        self.marker = self.dir / "done.json"

    @property
    def done(self) -> bool:
        return self.marker.exists()

    def start(self) -> None:
        if self.dir.exists():  # leftovers of a killed attempt
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)

    def finish(self, info: dict[str, Any]) -> None:
        write_json(self.marker, info)

    def info(self) -> dict[str, Any]:
        return read_json(self.marker)

    def run(self, note: Callable[[str, str], None], work: Callable[[Path], tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
        """Unless done: `work(stage_dir) -> (artifacts, info)` under a StageMonitor, its printed output (Trainer logs,
        progress bars) appended to the run's log file; each artifact is written atomically as JSON, then the marker
        (wall time, memory, info). Returns the marker's content."""
        from harness.progress import captured

        if self.done:
            note(self.name, "skipped (done)")
            return self.info()
        note(self.name, "running")
        self.start()
        with StageMonitor() as mon, captured(self.dir.parent / RUN_LOG):
            artifacts, info = work(self.dir)
        for name, obj in artifacts.items():
            write_json(self.dir / name, obj)
        self.finish({**mon.record, **info})
        return self.info()


# -- evaluator capabilities, through the registry ---------------------------------------------------

def hook(name: str) -> Callable[..., Any]:
    """An evaluator capability by name (judging, metrics, score models, TruthfulQA MC), from the EVALUATION registry:
    the harness never imports `evaluators` (tests/test_layers.py), so imports run one way."""
    from harness.registries import EVALUATION

    return EVALUATION.get(name)


# -- services handed to methods --------------------------------------------------------------------

class Services:
    """Lazily built, cached heavy objects: scorers and generators. Shared by the stages and the method."""

    def __init__(self, cfg: RunConfig, bundle, device: str):
        self.cfg, self.bundle, self.device = cfg, bundle, device
        self._scorers: dict[str, Any] = {}

    def scorer_name(self, kind: str) -> str:
        name = self.cfg.scoring.reward if kind == "reward" else self.cfg.scoring.cost
        return self.bundle.default_cost_scorer if name == "auto" else name

    def scorer(self, kind: str):
        from harness.registries import SCORERS

        name = self.scorer_name(kind)
        if name not in self._scorers:
            self._scorers[name] = SCORERS.get(name)(self.cfg)
        return self._scorers[name]

    def judge_name(self, role: str) -> str | None:
        """The scorer named for a judge role in `scoring.judges` (None: the role is not measured)."""
        return hook("judge_names")(self.cfg)[role]

    def judge(self, role: str):
        """The judge of a role (evaluators/judging.py), built once; an annotator named as a judge is shared."""
        from harness.registries import SCORERS

        name = self.judge_name(role)
        if name is None:
            raise BenchError(f"the {role} judge is switched off (scoring.judges.{role}=none)")
        if name not in self._scorers:
            self._scorers[name] = SCORERS.get(name)(self.cfg)
        return self._scorers[name]

    def generator(self, model, tokenizer=None, backend: str | None = None):
        from harness.generation import make_generator

        g = self.cfg.generation
        return make_generator(model, tokenizer, backend=backend or g.backend, template=self.cfg.template, batch_size=g.batch_size,
                              device=self.device, precision=self.cfg.train.precision, vllm=self.vllm_settings())

    def vllm_settings(self) -> dict[str, Any]:
        from harness.generation import vllm_settings

        return vllm_settings(self.cfg.generation, self.device)

    def generate_then_release(self, model, prompts: list[str], params: SamplingParams) -> tuple[list[str], Any]:
        """(responses, generator info): generate, then free the generator's model before anything is scored, so
        a vLLM engine and a score model never hold the GPU together. Returns the (closed) generator for its info."""
        answers, gen, _ = self.generate_sets_then_release(model, {"": prompts}, params)
        return answers[""], gen

    def generate_sets_then_release(self, model, sets: dict[str, list[str]], params: SamplingParams
                                   ) -> tuple[dict[str, list[str]], Any, dict[str, float]]:
        """Like `generate_then_release` for several prompt sets answered by one generator (one model load, one vLLM
        engine start), each set its own cache entry: ({set: responses}, the closed generator, {set: wall s}). The
        generator's `cache_hit` is the first set's."""
        import time

        from harness.generation import cached_generate, close_generator

        gen = self.generator(model)
        answers: dict[str, list[str]] = {}
        walls: dict[str, float] = {}
        try:
            for name, prompts in sets.items():
                start = time.perf_counter()
                answers[name], hit = cached_generate(gen, prompts, params, self.cfg.generation.cache)
                walls[name] = round(time.perf_counter() - start, 2)
                if len(answers) == 1:
                    gen.cache_hit = hit  # type: ignore[attr-defined]
            gen.params_policy = (sum(p.numel() for p in gen.model.parameters())  # type: ignore[attr-defined]
                                 if hasattr(getattr(gen, "model", None), "parameters") else None)
        finally:
            close_generator(gen)
        return answers, gen, walls

    def sampling(self, **over: Any) -> SamplingParams:
        g = self.cfg.generation
        return SamplingParams(**{**dict(max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, seed=self.cfg.seed), **over})


def build_context(cfg: RunConfig, stage_dir: Path, services: Services, policy_path: str, tracker=None, trajectory: list | None = None):
    from harness.api import TrainContext

    trajectory = trajectory if trajectory is not None else []

    def log_record(record: dict[str, Any]) -> None:
        trajectory.append(dict(record))
        if tracker is not None:
            tracker.log_metrics({f"train/{k}": v for k, v in record.items() if isinstance(v, (int, float))})

    def train_score_model(kind: str, pairs, name: str, **kw):  # kw: encoder=..., settings=... (evaluators.score_models)
        return hook("reusable_score_model")(kind, pairs, stage_dir / "work" / name, cfg, name=name, **kw)

    work = stage_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    return TrainContext(
        cfg=cfg, data=services.bundle, policy_path=policy_path, out_dir=stage_dir / "model", work_dir=work,
        device=services.device, seed=cfg.seed, make_generator=services.generator,
        reward_annotator=lambda: services.scorer("reward"), cost_annotator=lambda: services.scorer("cost"),
        train_score_model=train_score_model, tracker=tracker, log=log_record,
    )


def make_tracker(cfg: RunConfig, rid: str):
    from harness.registries import TRACKERS
    from harness.tracking import MemoryTracker

    if cfg.wandb.mode == "disabled":
        return MemoryTracker()
    try:
        return TRACKERS.get("wandb")(run_name=rid, group=cfg.suite, job_type="run", config=cfg.to_dict(), mode=cfg.wandb.mode,
                                     project=cfg.wandb.project, entity=cfg.wandb.entity, dir=cfg.runs_dir)
    except Exception as exc:  # W&B must never stop a run
        log.warning("W&B tracker unavailable (%s); continuing with local results only", exc)
        return MemoryTracker()


# -- the pipeline -----------------------------------------------------------------------------------

def load_run_config(runs_dir: str | Path, rid: str) -> RunConfig:
    path = Path(runs_dir) / rid / "config.yaml"
    if not path.exists():
        raise BenchError(f"no run '{rid}' under {runs_dir}: `bench runs` lists the run ids")
    from harness.config import read_yaml_mapping

    return config_from_dict(read_yaml_mapping(path, f"run {rid}: saved config"))


def world() -> tuple[int, int]:
    """(rank, world size) of this process under `accelerate launch` / torchrun; (0, 1) otherwise."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def distributed_record(cfg: RunConfig) -> dict[str, Any]:
    """World size and the effective (global) batch size: per-device batch x gradient accumulation x processes."""
    _, size = world()
    t = cfg.train
    return {"world_size": size, "per_device_batch_size": t.batch_size, "grad_accum": t.grad_accum,
            "effective_batch_size": t.batch_size * t.grad_accum * size,
            "launcher": "accelerate" if size > 1 or os.environ.get("ACCELERATE_PROCESS_ID") else "none"}


def _follow_training(cfg: RunConfig, rid: str) -> None:
    """A non-zero rank of a data-parallel run: take part in the train stage's collectives and nothing else.

    Rank 0 owns the run folder, the record and the store. This rank runs the same method code (so every
    all-reduce has its partner) in a scratch copy of the run tree, `runs/<run-id>/.rank<r>/`, removed afterwards:
    the weights it ends with equal rank 0's, and generation, scoring and metrics happen once, on rank 0.
    """
    from harness.datasets import load_bundle
    from harness.checkpoint import method_class
    from harness.models import resolve_device, resolve_model

    rank, _ = world()
    run_dir = Path(cfg.runs_dir) / rid
    if Stage(run_dir, "train").done:  # rank 0 skips a finished train stage: so does every other rank
        return
    scratch = run_dir / f".rank{rank}"
    shutil.rmtree(scratch, ignore_errors=True)
    method_cls = method_class(cfg)
    mcfg = method_config(method_cls.config_class, cfg)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    services = Services(cfg, load_bundle(cfg), device)
    stage_dir = scratch / "train"
    stage_dir.mkdir(parents=True)
    try:
        method_cls(mcfg).train(build_context(cfg, stage_dir, services, str(resolve_model(cfg.model))))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@dataclass
class Plan:
    """What `preflight` checked and loaded: everything a run needs before its first stage starts."""

    method_cls: Any
    method_config: Any
    device: str
    bundle: Any
    eval_set: str
    prompts: list
    policy_path: str
    refusal_sets: dict  # {metric group: prompts} the refusal judge scores (REFUSAL_JUDGED_SETS; {} when it is off)


def preflight(cfg: RunConfig) -> Plan:
    """Check everything a run will need, in seconds and before any folder or store row exists: method and its config,
    a writable runs dir and a readable store, the data (every file, row and field), the evaluation prompts, the
    scorers, the model and its tokenizer (and that every prompt fits its context), the generation backend and the
    TruthfulQA MC targets. A bad input fails here with one BenchError line, never after training."""
    from harness.checkpoint import check_checkpoint, is_evaluation, method_class
    from harness.datasets import load_bundle, load_eval_prompts
    from harness.generation import choose_backend
    from harness.io import folder_problem
    from harness.models import BUILTIN_MODELS, load_tokenizer, resolve_device, resolve_model
    from harness.registries import SCORERS
    from harness.store import check_store

    method_cls = method_class(cfg)  # a registered method, or `bench eval`'s checkpoint (harness/checkpoint.py)
    mcfg = plugin_step("method", cfg.method, "its config was built", lambda: method_config(method_cls.config_class, cfg))
    check_writable(Path(cfg.runs_dir))
    if cfg.data.data_dir:  # --data-dir, --set data.data_dir or $BENCH_DATA_DIR naming a file: one line, not "no files under"
        from harness.errors import check_folder

        check_folder(cfg.data.data_dir, "--data-dir")
    check_store(cfg.runs_dir)
    device = resolve_device(cfg.device)
    choose_backend(cfg.generation.backend, device)
    bundle = load_bundle(cfg)
    eval_set, prompts = load_eval_prompts(cfg, bundle)
    if not prompts:
        raise BenchError(f"evaluation set '{eval_set}' has no prompts: check data.eval_set and data.max_eval_prompts")
    for kind in ("reward", "cost"):
        name = cfg.scoring.reward if kind == "reward" else cfg.scoring.cost
        SCORERS.get(bundle.default_cost_scorer if name == "auto" else name)  # unknown or broken scorer: fail now
    for name in hook("judge_names")(cfg).values():  # unknown role or judge: fail now, not after training
        if name is not None:
            SCORERS.get(name)
    policy_path = str(resolve_model(cfg.model))
    if Path(policy_path).is_dir() and cfg.model not in BUILTIN_MODELS:  # the user's own folder: checked, never changed
        problem = folder_problem(policy_path, adopt=False)
        if problem:
            raise BenchError(f"model folder {policy_path} is damaged ({problem}): re-save or re-download it")
    check_context(load_tokenizer(policy_path), policy_path, cfg, bundle, prompts)
    if is_evaluation(cfg):  # `bench eval`: the checkpoint resolves, is intact, and every prompt fits its context
        checkpoint_path, checkpoint_tokenizer = check_checkpoint(cfg)
        check_context(checkpoint_tokenizer, checkpoint_path, cfg, bundle, prompts)
    if cfg.eval.truthfulqa_mc:
        from harness.datasets.truthfulqa import load_questions

        questions = load_questions(cfg.data.data_dir, cfg.data.revision if cfg.dataset == "truthfulqa" else None)
        if not any(q.get("mc1_targets") for q in questions):
            raise BenchError("no TruthfulQA multiple-choice targets found (truthfulqa/data/mc_task.json is missing): add the file "
                             "or --set eval.truthfulqa_mc=false")
    return Plan(method_cls, mcfg, device, bundle, eval_set, prompts, policy_path, load_refusal_sets(cfg))


def check_writable(runs_dir: Path) -> None:
    """The runs dir exists (or can be made) and takes a file: a read-only or full disk fails before any work."""
    from harness.errors import check_folder

    check_folder(runs_dir, "--runs-dir")  # a regular file there (or above it): one line, not NotADirectoryError
    probe = runs_dir / f".write-probe-{os.getpid()}"
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
    except OSError as exc:
        from harness.errors import os_error_message

        raise BenchError(os_error_message(exc) or f"cannot write to runs dir {runs_dir}: {exc} (choose another --runs-dir)") from None
    finally:
        probe.unlink(missing_ok=True)


def check_context(tokenizer, policy_path: str, cfg: RunConfig, bundle, prompts) -> None:
    """Every evaluation and dual prompt, with the chat template and the new tokens, fits the model's context window."""
    from transformers import AutoConfig

    from harness.models import format_prompt

    try:
        window = getattr(AutoConfig.from_pretrained(policy_path), "max_position_embeddings", None)
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read the config of model '{cfg.model}': {str(exc).splitlines()[0]} (pass a saved model folder or hub id)") from None
    if not window:
        return
    room = window - cfg.generation.max_new_tokens
    for fold, items in (("eval", prompts), ("dual", bundle.prompts.get("dual", []))):
        for i, p in enumerate(items):
            n = len(tokenizer(format_prompt(tokenizer, p.prompt, cfg.template))["input_ids"])
            if n > room:
                raise BenchError(f"{bundle.source}: {fold} prompt {i} ({p.prompt[:40]!r}...) is {n} tokens, longer than the model's "
                                 f"{window}-token context minus generation.max_new_tokens={cfg.generation.max_new_tokens}: "
                                 "shorten or remove that row")


def run(cfg: RunConfig, on_stage: Callable[[str, str], None] | None = None, plan: Plan | None = None) -> dict[str, Any] | None:
    """Execute (or resume) a run and return its results record (None on a non-zero data-parallel rank). Every input
    is checked first (`preflight`, skipped when its `plan` is passed). Two processes asking for the same run id never
    both run it: the second waits on the run lock, then returns the first one's record."""
    from harness.store import run_lock

    rid = run_id(cfg)
    run_dir = Path(cfg.runs_dir) / rid
    if world()[0] != 0:
        _follow_training(cfg, rid)
        return None
    results_path = run_dir / "results.json"
    note = on_stage or (lambda stage, status: log.info("[%s] %s: %s", rid, stage, status))
    if results_path.exists():
        note("all", "finished earlier (cached)")
        return cached_record(cfg, run_dir)
    plan = plan or preflight(cfg)
    with run_lock(cfg.runs_dir, rid, on_wait=lambda holder: note("all", f"waiting: another process ({holder}) is running this run")):
        if results_path.exists():  # the other process finished it while we waited
            note("all", "finished by another process (cached)")
            return read_json(results_path)
        return _execute(cfg, plan, rid, run_dir, note)


def cached_record(cfg: RunConfig, run_dir: Path) -> dict[str, Any]:
    """A finished run's record, re-registered in the store when its row is missing (the store was deleted or rebuilt
    elsewhere); a record that no longer fits the results schema is refused with the way to rebuild it."""
    from harness.store import heal, record_problem, writable

    results_path = run_dir / "results.json"
    try:
        record = read_json(results_path)
    except ValueError as exc:
        record, problem = None, f"is not valid JSON ({exc})"
    else:
        problem = record_problem(record, run_dir.name)
    if problem:
        raise BenchError(f"{results_path} {problem}: delete that file and rerun to rebuild the record from the finished stages")
    if writable(cfg.runs_dir):
        heal(cfg.runs_dir)
    return record


def _execute(cfg: RunConfig, plan: Plan, rid: str, run_dir: Path, note: Callable[[str, str], None]) -> dict[str, Any]:
    """The four stages, under the run lock. Finished stages are skipped; the record is written last."""
    results_path = run_dir / "results.json"
    method_cls, mcfg, device, bundle, eval_set, prompts, policy_path = (
        plan.method_cls, plan.method_config, plan.device, plan.bundle, plan.eval_set, plan.prompts, plan.policy_path)
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "config.yaml", dump_yaml(cfg))
    except OSError:
        if created:  # never leave a half-made run folder behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    store_kw = store_keys(cfg)
    upsert_run(cfg.runs_dir, rid, status="running", **store_kw)

    seed_everything(cfg.seed)
    services = Services(cfg, bundle, device)
    refusal_sets = plan.refusal_sets
    tracker = make_tracker(cfg, rid)
    current = {"stage": "train"}  # the stage a failure is blamed on

    def track(stage: str, status: str) -> None:
        if status == "running":
            current["stage"] = stage
        note(stage, status)

    try:
        # 1. train: the method turns the SFT policy into the aligned one
        train = Stage(run_dir, "train").run(track, partial(train_stage, services, method_cls, mcfg, policy_path, tracker))
        model_path = train["result"]["model_path"] or policy_path
        # 2. generate: responses to the evaluation prompts (needs the trained model)
        gen_info = Stage(run_dir, "generate").run(track, partial(generate_stage, services, prompts, model_path,
                                                                       refusal_sets=refusal_sets))
        rows = read_json(run_dir / "generate" / "generations.json")
        judged_rows = {g: read_json(run_dir / "generate" / f"{g}_generations.json") for g in REFUSAL_JUDGED_SETS
                       if (run_dir / "generate" / f"{g}_generations.json").exists()}
        # 3. score: the judges score every response (and the refusal judge each refusal-judged prompt set)
        score_info = Stage(run_dir, "score").run(track, partial(score_stage, services, rows, judged_rows=judged_rows))
        scores = read_json(run_dir / "score" / "scores.json")
        # 4. metrics: CIs, win rates vs SFT, TruthfulQA (needs the scores and both models)
        metrics_info = Stage(run_dir, "metrics").run(track, partial(metrics_stage, services, rows, scores, score_info, policy_path, model_path,
                                                                      judged_rows=judged_rows))
        metrics = read_json(run_dir / "metrics" / "metrics.json")
        current["stage"] = "record"

        record = results_record(cfg, rid, train=train, gen_info=gen_info, score_info=score_info, metrics_info=metrics_info,
                                metrics=metrics, params=services.sampling(), eval_set=eval_set, n_prompts=len(rows),
                                bundle=bundle, prompts=prompts, device=device, policy_path=policy_path, vllm=services.vllm_settings())
        write_json(results_path, record)
        upsert_run(cfg.runs_dir, rid, status="finished", stage="metrics", results=record, **store_kw)
        log_results(tracker, record)
        note("all", "finished")
        return record
    except BaseException as exc:
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        upsert_run(cfg.runs_dir, rid, status=status, **store_kw)
        failure = stage_failure(exc, current["stage"], rid, run_dir, services)
        if failure is not None:
            raise failure from exc
        raise
    finally:
        try:
            tracker.finish()
        except Exception as exc:  # noqa: BLE001
            log.warning("tracker finish failed: %s", exc)


RUN_LOG = "run.log"  # in the run folder: the traceback of every failed attempt, appended


def stage_failure(exc: BaseException, stage: str, rid: str, run_dir: Path, services: Services) -> Exception | None:
    """The one-line `RunFailed` for a component that failed inside a stage (an exception, or a `sys.exit` that would
    otherwise end the process without a word), its traceback appended to the run's log; None for what the CLI already
    reports in one line (Ctrl-C, bad input, a full or read-only disk)."""
    import traceback

    from harness.errors import RunFailed, os_error_message

    if isinstance(exc, (KeyboardInterrupt, GeneratorExit, BenchError, RunFailed)):
        return None
    if isinstance(exc, OSError) and os_error_message(exc) is not None:
        return None
    who, plugin = blame(exc, stage, services)
    what = error_words(exc)
    details = "".join(traceback.format_exception(exc))
    log_path = run_dir / RUN_LOG
    try:
        with open(log_path, "a", encoding="utf-8") as fh:
            stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            fh.write(f"{stamp} run {rid}: {stage} stage failed in {who}\n{details}\n")
        where = f"traceback in {log_path}"
    except OSError:
        where = "the traceback could not be saved"
    fix = "fix or uninstall the plugin" if plugin else "report it with the log"
    return RunFailed(f"run {rid} failed in the {stage} stage: {who} {what} (the run is marked failed, finished stages are kept; "
                     f"{where}, `bench --debug ...` prints it; {fix}, then rerun to resume)", log_path=str(log_path), details=details)


def error_words(exc: BaseException) -> str:
    """"called sys.exit(3)" or "raised ValueError: <first line>": what a failing component did, for one line."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})"
    text = str(exc).strip().splitlines()
    return f"raised {type(exc).__name__}" + (f": {text[0][:200]}" if text else "")


def plugin_step(kind: str, name: str, doing: str, step: Callable[[], Any]) -> Any:
    """`step()` for a component's own code run before any run folder exists (a method's config class): its failure,
    other than bad input or Ctrl-C, becomes one `RunFailed` line naming it (exit 1; `bench --debug` prints the traceback)."""
    import traceback

    from harness.errors import RunFailed
    from harness.registries import METHODS, SCORERS

    try:
        return step()
    except (BenchError, KeyboardInterrupt, GeneratorExit):
        raise
    except (Exception, SystemExit) as exc:
        registry = {"method": METHODS, "scorer": SCORERS}[kind]
        plugin = name in registry and not registry.is_builtin(name)
        fix = "fix or uninstall the plugin" if plugin else "report it with the traceback"
        raise RunFailed(f"{kind} {'plugin ' if plugin else ''}'{name}' failed while {doing}: {error_words(exc)} (nothing was run; "
                        f"`bench --debug ...` prints the traceback; {fix})", details="".join(traceback.format_exception(exc))) from exc


def blame(exc: BaseException, stage: str, services: Services) -> tuple[str, bool]:
    """(the component an exception came from, e.g. "scorer plugin 'x'", whether it is a plugin): the innermost scorer
    (judge or annotator) in its traceback, being built or scoring; else the stage's own component (the method, in train)."""
    from harness.registries import METHODS, SCORERS

    built = {id(obj): name for name, obj in services._scorers.items()}
    makers = (Services.scorer.__code__, Services.judge.__code__)
    found = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        owner = frame.f_locals.get("self")
        if owner is not None and id(owner) in built:
            found = built[id(owner)]
        elif frame.f_code in makers and isinstance(frame.f_locals.get("name"), str):
            found = frame.f_locals["name"]
        tb = tb.tb_next
    registry, name = (SCORERS, found) if found else (METHODS, services.cfg.method) if stage == "train" else (None, None)
    if registry is None:
        return "the harness", False
    plugin = not registry.is_builtin(name)
    return f"{registry.kind} {'plugin ' if plugin else ''}'{name}'", plugin


def store_keys(cfg: RunConfig) -> dict[str, Any]:
    """The run store's index columns (and the record's first fields)."""
    return dict(method=cfg.method, dataset=cfg.dataset, model=cfg.model, profile=cfg.profile, seed=cfg.seed, suite=cfg.suite)


# -- the four stages: each `stage(..., stage_dir) -> (artifacts, info)`, run by `Stage.run` ---------------------------

def train_stage(services: Services, method_cls: type, mcfg: Any, policy_path: str, tracker, stage_dir: Path) -> tuple[dict, dict]:
    """1. The method trains; its final model is in `stage_dir/model` (or it returns `model_path=None`: the SFT policy)."""
    from harness.training import learning

    trajectory: list[dict[str, Any]] = []
    ctx = build_context(services.cfg, stage_dir, services, policy_path, tracker, trajectory)
    with learning.collect(services.cfg, services.bundle) as checks:  # every train_dpo call records its held-out check
        result = method_cls(mcfg).train(ctx)
    result.trajectory = result.trajectory or trajectory
    if result.model_path is None or not str(result.model_path).startswith(str(stage_dir / "work")):
        shutil.rmtree(stage_dir / "work", ignore_errors=True)  # scratch models; the final one is in model/
    out, config = asdict(result), asdict(mcfg)
    entries = checks.entries + learning.trajectory_checks(services.cfg.method, out, config, services.cfg.learning)
    return {}, {"result": out, "method_config": config,
                "learning": {"checks": entries, "summary": learning.summary(entries), "forward_sequences": checks.forward_sequences,
                             "seconds": round(checks.seconds, 2),
                             "heldout_pairs": {v: len(p) for v, p in checks.heldout.items()}, "heldout_fold": learning.HELDOUT_FOLD}}


def generate_stage(services: Services, prompts, model_path: str, stage_dir: Path, refusal_sets: dict | None = None) -> tuple[dict, dict]:
    """2. Responses of the trained model to the evaluation prompts and to each prompt set the refusal judge scores
    (`REFUSAL_JUDGED_SETS`: XSTest's safe prompts, the harmful requests), through the shared generation cache; each
    set's prompt count and wall time are recorded (`<group>_prompts`, `<group>_wall_s`)."""
    from harness.models import model_fingerprint

    # the same model and decoding for every set, one generator, a separate cache entry per set (so the SFT policy's
    # evaluation responses stay shared with other runs' baselines)
    sets = {"": prompts, **{group: ps for group, ps in (refusal_sets or {}).items() if ps}}
    answers, gen, walls = services.generate_sets_then_release(Path(model_path), {k: [p.prompt for p in v] for k, v in sets.items()},
                                                             services.sampling())
    rows = [{"prompt": p.prompt, "category": p.category, "response": r} for p, r in zip(prompts, answers[""])]
    artifacts: dict[str, Any] = {"generations.json": rows}
    info = {"cache_hit": gen.cache_hit, "backend": gen.name, "backend_reason": getattr(gen, "backend_reason", ""),
            "backend_version": getattr(gen, "backend_version", ""), "generated_by": getattr(gen, "generated_by", None),
            "model_fingerprint": model_fingerprint(model_path), "params_policy": gen.params_policy}
    for group, set_prompts in sets.items():
        if group:
            artifacts[f"{group}_generations.json"] = [{"prompt": p.prompt, "category": p.category, "response": r}
                                                      for p, r in zip(set_prompts, answers[group])]
            info.update({f"{group}_prompts": len(set_prompts), f"{group}_wall_s": walls[group]})
    return artifacts, info


# Prompt sets judged by the refusal judge (issue 25): metric group -> (the record's "set", its per-category key, the
# loader in harness.datasets.prompt_sets). Each is generated by the trained model (`<group>_generations.json`), scored
# by the refusal judge (scores `<group>` = decisions, 1 = refused; `<group>_score` = P(refusal)) and reduced by its
# group's declared metrics (evaluators/metrics.py): over-refusal of safe prompts, compliance with harmful requests.
REFUSAL_JUDGED_SETS = {"refusal": ("xstest-safe", "per_type", "load_xstest_safe"),
                       "harmful": ("beavertails+redteam-83", "per_category", "load_harmful_prompts")}


def load_refusal_sets(cfg: RunConfig) -> dict[str, list]:
    """{group: prompts} of every set in `REFUSAL_JUDGED_SETS`, or {} when the refusal judge is off."""
    if hook("judge_names")(cfg)["refusal"] is None:
        return {}
    from harness.datasets import prompt_sets

    return {group: getattr(prompt_sets, loader)(cfg) for group, (_, _, loader) in REFUSAL_JUDGED_SETS.items()}


def load_refusal_prompts(cfg: RunConfig) -> list:
    """XSTest's safe prompts (capped by `data.max_refusal_prompts`), or none when the refusal judge is off."""
    if hook("judge_names")(cfg)["refusal"] is None:
        return []
    from harness.datasets.prompt_sets import load_xstest_safe

    return load_xstest_safe(cfg)


def score_stage(services: Services, rows: list[dict[str, Any]], stage_dir: Path, judged_rows: dict | None = None) -> tuple[dict, dict]:
    """3. The JUDGES score every response: reward, the cost role's P(unsafe) and decision, and the refusal judge's
    P(refusal) and decision on each refusal-judged prompt set (`REFUSAL_JUDGED_SETS`).
    The ANNOTATORS (what the method may have trained against) are named with their fingerprints, so the record
    can say whether a judge is also an annotator (evaluators/judging.py)."""
    cost_role, decisions, describe = map(hook, ("cost_role", "decisions", "describe"))
    cfg = services.cfg
    ps, rs = [r["prompt"] for r in rows], [r["response"] for r in rows]
    role = cost_role(cfg.dataset)
    rew, cost = services.judge("reward"), services.judge(role)
    cost_scores = cost.score(ps, rs)
    scores: dict[str, Any] = {"reward": rew.score(ps, rs), "cost": cost_scores, "unsafe": decisions(cost, cost_scores)}
    judges = {"reward": describe(services.judge_name("reward"), rew), role: describe(services.judge_name(role), cost)}
    if judged_rows:
        refusal = services.judge("refusal")
        for group, set_rows in judged_rows.items():
            p_refusal = refusal.score([r["prompt"] for r in set_rows], [r["response"] for r in set_rows])
            scores.update({group: decisions(refusal, p_refusal), f"{group}_score": p_refusal})
        judges["refusal"] = describe(services.judge_name("refusal"), refusal)
    annotators = {kind: describe(services.scorer_name(kind), services.scorer(kind)) for kind in ("reward", "cost")}
    return {"scores.json": scores}, {"judges": judges, "annotators": annotators}


def metrics_stage(services: Services, rows, scores, score_info, policy_path: str, model_path: str, stage_dir: Path,
                  judged_rows: dict | None = None) -> tuple[dict, dict]:
    """4. The metrics block, and the declared metrics' per-item values (the leaderboard's seeds x prompts intervals)."""
    values: dict[str, list[float]] = {}
    keys: dict[str, str] = {}
    metrics = compute_metrics(services.cfg, services.bundle, services, rows, scores, score_info, policy_path, model_path, values, keys,
                              judged_rows=judged_rows)
    hook("save_items")(stage_dir, values, keys)
    return {"metrics.json": metrics}, {}


# -- the record ---------------------------------------------------------------------------------------------------------

def count_params_trained(cfg: RunConfig, result: dict[str, Any], params_policy: int | None, policy_path: str) -> int | None:
    """Parameters optimised in training: the method's own count (the PPO loop counts its networks), else one policy
    fine-tune per model trained (LoRA: the adapters only)."""
    params_trained = result.get("extra", {}).get("params_trained")
    if params_trained is not None:
        return params_trained
    per_model = params_policy or 0
    if cfg.train.lora and result["models_trained"]:
        try:
            from harness.models import lora_trainable_params

            per_model = lora_trainable_params(policy_path, cfg.train.lora_r, cfg.train.lora_alpha)
        except Exception as exc:  # a bookkeeping count must never cost a finished run its record
            log.warning("could not count LoRA parameters (%s); recording none", exc)
            per_model = None
    return per_model * result["models_trained"] if per_model is not None else None


def results_record(cfg: RunConfig, rid: str, *, train: dict[str, Any], gen_info: dict[str, Any], score_info: dict[str, Any],
                   metrics_info: dict[str, Any], metrics: dict[str, Any], params: SamplingParams, eval_set: str, n_prompts: int,
                   bundle, prompts, device: str, policy_path: str, vllm: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results record (docs/results-schema.md) from the stages' done-markers and the metrics block."""
    from harness.datasets import rows_hash
    from harness.models import resolved_precision

    cost_role, self_judged, higher_is_better = map(hook, ("cost_role", "self_judged", "higher_is_better"))

    result = train["result"]
    extra = result.get("extra", {})
    stages: dict[str, Any] = {
        "train": {k: v for k, v in train.items() if k not in ("result", "method_config", "learning")},
        "generate": gen_info,
        "score": {k: v for k, v in score_info.items() if k not in ("judges", "annotators")},
        "metrics": metrics_info,
    }
    stages["train"]["params_trained"] = count_params_trained(cfg, result, gen_info.get("params_policy"), policy_path)
    stages["train"]["params_held"] = extra.get("params_held")
    return {
        "schema_version": RESULTS_SCHEMA_VERSION, "run_id": rid, **store_keys(cfg),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "git_hash": git_hash(),
        "config": cfg.to_dict(), "results": metrics,
        "higher_is_better": higher_is_better(),
        "train": {k: result.get(k) for k in ("models_trained", "networks_held", "trajectory", "extra")} | {"method_config": train.get("method_config")}
        | learning_block(train.get("learning")),
        "stages": stages,
        "generation": {**asdict(params), "backend": gen_info["backend"], "backend_reason": gen_info["backend_reason"],
                       "backend_version": gen_info.get("backend_version", ""), "generated_by": gen_info.get("generated_by"), "template": cfg.template,
                       "eval_set": eval_set, "n_prompts": n_prompts, "vllm": vllm},
        "annotators": score_info["annotators"], "judges": score_info["judges"],
        "self_judged": self_judged(score_info["judges"], score_info["annotators"]),
        # schema 1.0's field, kept: what scored results.safety (now the reward judge and the cost role's judge)
        "scorers": {"reward": score_info["judges"]["reward"], "cost": score_info["judges"][cost_role(cfg.dataset)]},
        "data": {"source": bundle.source, "rows_sha256": rows_hash(bundle, prompts), "counts": bundle.counts, "notes": bundle.notes},
        "versions": versions(),
        "env": {"device": device, "precision": cfg.train.precision, "precision_resolved": resolved_precision(cfg.train.precision, device),
                "num_threads": _num_threads(), "platform": platform.platform()},
        "distributed": distributed_record(cfg),
    }


def learning_block(learning: dict[str, Any] | None) -> dict[str, Any]:
    """`learning` (the checks), `learned` (their one-line summary) and `learning_cost` for the record's train block;
    a train stage finished before the checks existed gives `learned: "n/a"`."""
    if not learning:
        return {"learning": [], "learned": "n/a"}
    return {"learning": learning["checks"], "learned": learning["summary"],
            "learning_cost": {k: learning.get(k) for k in ("forward_sequences", "seconds", "heldout_pairs", "heldout_fold")}}


def _num_threads() -> int:
    import torch

    return torch.get_num_threads()


def compute_metrics(cfg: RunConfig, bundle, services: Services, rows, scores, score_info, policy_path: str, model_path: str,
                    items: dict[str, list[float]] | None = None, keys: dict[str, str] | None = None,
                    judged_rows: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Safety metrics with CIs (+ win rate vs SFT), TruthfulQA MC1/MC2 and generation truthfulness. The declared
    metrics' per-item values go to `items`, and a hash of each group's item order (prompts, questions) to `keys`."""
    confusion_counts, cost_role, decisions = map(hook, ("confusion_counts", "cost_role", "decisions"))
    bootstrap_ci, keys_hash, safety_metrics = map(hook, ("bootstrap_ci", "keys_hash", "safety_metrics"))
    keys = keys if keys is not None else {}
    role = cost_role(cfg.dataset)
    rew, cost = services.judge("reward"), services.judge(role)

    ref_r = ref_c = ref_unsafe = sft_responses = None
    if cfg.scoring.win_rate_vs_sft and Path(model_path) != Path(policy_path):
        ps = [r["prompt"] for r in rows]
        sft_responses, _ = services.generate_then_release(Path(policy_path), ps, services.sampling())
        ref_r, ref_c = rew.score(ps, sft_responses), cost.score(ps, sft_responses)
        ref_unsafe = decisions(cost, ref_c)
    out: dict[str, Any] = {
        "safety": safety_metrics(
            scores["reward"], scores["cost"], categories=[r["category"] for r in rows], responses=[r["response"] for r in rows],
            ref_rewards=ref_r, ref_costs=ref_c, threshold=cfg.scoring.threshold, units=cfg.scoring.threshold_units,
            n_boot=cfg.scoring.bootstrap, seed=cfg.seed, cost_is_binary=bool(getattr(cost, "is_binary", False)), items=items,
            unsafe=scores.get("unsafe"), ref_unsafe=ref_unsafe, ref_responses=sft_responses, judge_counts=confusion_counts(cost),
        )
    }
    keys["safety"] = keys_hash([r["prompt"] for r in rows])
    judge = score_info["judges"][role]
    out["judge"] = {"role": role, "name": judge["name"], "fingerprint": judge["fingerprint"],
                    "source": (judge.get("heldout") or {}).get("source"), "accuracy": (judge.get("heldout") or {}).get("accuracy")}
    for group, set_rows in (judged_rows or {}).items():  # each refusal-judged set (the refusal judge's decisions, score stage)
        if group not in scores:
            continue
        set_name, per_key, _ = REFUSAL_JUDGED_SETS[group]
        block = hook("refusal_set_metrics")(group, scores[group], [r["category"] for r in set_rows], cfg.scoring.bootstrap, cfg.seed,
                                            items, per_key=per_key)
        out[group] = {"set": set_name, "judge": score_info["judges"]["refusal"]["name"], **block}
        keys[group] = keys_hash([r["prompt"] for r in set_rows])
    if cfg.dataset == "truthfulqa":
        out["truthfulness"] = {"true_rate": bootstrap_ci([1.0 - u for u in out_flags(scores)], cfg.scoring.bootstrap, cfg.seed),
                               "n": len(rows), "judge": judge["name"]}
    if cfg.eval.truthfulqa_mc:
        from harness.models import load_policy

        mc_metrics, select_mc_questions = hook("mc_metrics"), hook("select_mc_questions")
        questions, split = select_mc_questions(cfg)
        model, tok = load_policy(Path(model_path), services.device, cfg.train.precision)
        mc = mc_metrics(model, tok, questions, batch_size=cfg.eval.mc_batch_size, n_boot=cfg.scoring.bootstrap, seed=cfg.seed, items=items)
        keys["truthfulqa"] = keys_hash([q["question"] for q in questions if q.get("mc1_targets") and q.get("mc2_targets")])
        mc["split"] = split
        out["truthfulqa"] = mc
        del model
    return out


def out_flags(scores: dict[str, Any]) -> list[float]:
    """The cost judge's per-prompt unsafe (untruthful) decisions; score folders from before judges: cost > 0."""
    return [float(u) for u in scores["unsafe"]] if "unsafe" in scores else [float(c > 0) for c in scores["cost"]]


def log_results(tracker, record: dict[str, Any]) -> None:
    """Mirror the record to the tracker (its `log_results`, e.g. leaderboards.wandb_tracker); failures are warnings:
    the local record is already written."""
    try:
        log_fn = getattr(tracker, "log_results", None)
        if log_fn is not None:
            log_fn(record)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not log results to the tracker: %s", exc)
