"""Scale-out: the Ray suite executor, data-parallel DPO on CPU (gloo), DeepSpeed presets, vLLM settings and the
generator-before-scorer release order."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# Settings that keep a tiny run to seconds; the leaderboard compares reward/cost/unsafe-rate and win rates.
FAST = ["eval.truthfulqa_mc=false", "scoring.bootstrap=100", "generation.cache=false"]
RESOURCE_COLUMNS = {"peak_rss_mb", "peak_cuda_mb", "wall_s"}  # measurements of the process, not results


def _suite(runs_dir: Path, *extra: str):
    from typer.testing import CliRunner

    from harness.cli import app

    args = ["suite", "--methods", "sft,dpo-harmless", "--seeds", "0,1", "--profile", "tiny", "--runs-dir", str(runs_dir),
            "--suite-id", "s", *[a for kv in FAST for a in ("--set", kv)], *extra]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    return [{k: v for k, v in row.items() if k not in RESOURCE_COLUMNS}
            for row in csv.DictReader((runs_dir / "suites" / "s" / "leaderboard.csv").open())]


@pytest.fixture(scope="module")
def local_ray():
    import ray  # the ray extra: `make install` installs it, so CI runs these tests
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {k: os.environ[k] for k in ("BENCH_DATA_DIR", "HF_HUB_OFFLINE", "BENCH_QUIET") if k in os.environ}})
    yield ray
    ray.shutdown()


def test_ray_suite_equals_in_process_and_resumes(tmp_path: Path, local_ray) -> None:
    from harness.store import list_runs

    local = _suite(tmp_path / "local")
    ray_dir = tmp_path / "ray"
    remote = _suite(ray_dir, "--executor", "ray")
    assert len(remote) == 2 and remote == local  # same ranks, rewards, costs, unsafe rates and their intervals
    rows = list_runs(ray_dir)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"finished"}  # four workers, one store, no lost write

    # What a driver killed mid-run leaves: one run with train + generate done, score half-written, no record.
    (victim,) = ray_dir.glob("dpo-harmless-*-s1-*")
    (victim / "results.json").unlink()
    (victim / "metrics" / "done.json").unlink()
    (victim / "score" / "done.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in (victim / "train" / "done.json", victim / "generate" / "done.json")}
    others = {p: p.stat().st_mtime_ns for p in ray_dir.glob("*/results.json")}
    assert len(others) == 3
    assert _suite(ray_dir, "--executor", "ray") == local
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # finished stages were not redone
    assert {p: p.stat().st_mtime_ns for p in others} == others  # finished runs were skipped
    assert (victim / "score" / "done.json").exists() and (victim / "results.json").exists()


def test_ray_failure_is_one_line_and_the_grid_goes_on(tmp_path: Path, local_ray) -> None:
    """A run that fails inside its Ray task (a bad method setting, caught when the run starts) is one failed
    outcome with the run's one-line BenchError, and the other cells still finish (warm workers: cached record)."""
    from harness.config import load_config
    from harness.executors import run_ray

    bad = load_config("tiny", FAST + ["methods.sft.no_such_field=1"], method="sft", runs_dir=str(tmp_path))
    (out,) = run_ray([("sft", 1, bad)])
    assert out["status"] == "failed" and "no_such_field" in out["error"] and "\n" not in out["error"].strip()


def _hammer(args: tuple[str, int]) -> int:
    from harness.store import upsert_run

    runs_dir, worker = args
    for i in range(25):
        upsert_run(runs_dir, f"w{worker}-{i}", method="m", dataset="d", model="x", profile="tiny", seed=worker, suite=None,
                   status="finished", stage="metrics", results={"run_id": f"w{worker}-{i}", "i": i})
    return worker


def test_concurrent_store_writes_do_not_collide(tmp_path: Path) -> None:
    """Four processes writing one store at once (what parallel Ray workers do): no write lost, none raises."""
    from harness.store import list_runs

    with mp.get_context("spawn").Pool(4) as pool:
        assert sorted(pool.map(_hammer, [(str(tmp_path), w) for w in range(4)])) == [0, 1, 2, 3]
    rows = list_runs(tmp_path)
    assert len(rows) == 100 and all(r["results"]["run_id"] == r["run_id"] for r in rows)


def test_driver_ingests_a_record_written_elsewhere(tmp_path: Path) -> None:
    """A worker on another node wrote its run folder and store there: the driver's store and folder still get it."""
    from harness.executors import ingest_record
    from harness.store import list_runs
    from results_fixtures import make_record

    record = make_record("pddpo", seed=1)
    ingest_record(tmp_path, record)
    ingest_record(tmp_path, record)  # idempotent
    (row,) = list_runs(tmp_path)
    assert row["status"] == "finished" and row["results"] == json.loads(json.dumps(record))
    assert json.loads((tmp_path / record["run_id"] / "results.json").read_text())["run_id"] == record["run_id"]


def test_ray_resource_request_comes_from_the_profile() -> None:
    from harness.config import load_config
    from harness.errors import BenchError
    from harness.executors import ray_options

    assert ray_options(load_config("gpu")) == {"num_cpus": 8, "num_gpus": 1, "max_retries": 0, "memory": 64 * 2**30}
    assert ray_options(load_config("tiny", ["resources.gpus=0.5"]))["num_gpus"] == 0.5
    with pytest.raises(BenchError, match="resources"):
        ray_options(load_config("tiny", ["resources.cpus=0"]))
    assert load_config("tiny", ["resources.cpus=2"]).fingerprint() == load_config("tiny").fingerprint()  # not in the run id


def test_suite_executor_errors(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from harness.cli import app

    out = CliRunner().invoke(app, ["suite", "--methods", "sft", "--profile", "tiny", "--executor", "dask"])
    assert out.exit_code != 0 and "--executor 'dask'" in str(out.exception)
    out = CliRunner().invoke(app, ["suite", "--methods", "sft", "--profile", "tiny", "--address", "auto"])
    assert "--address needs --executor ray" in str(out.exception)


# -- data parallelism -------------------------------------------------------------------------------------------------

def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_two_gloo_processes_equal_one_process_with_the_whole_batch(tmp_path: Path) -> None:
    """DDP (accelerate launch, configs/accelerate/ddp.yaml, gloo on CPU), per-device batch 2 x 2 processes vs one
    process with batch 4: same loss (|Δ| < 1e-5) and same updated weights (max |Δ| < 1e-6, against a change of the
    weights by the step that is > 1e-3), in fp32 with plain SGD, one optimiser step over the same 4 pairs."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    import ddp_dpo_worker
    from harness.training.dpo import read_train_record
    from harness.models import resolve_model

    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(REPO / "configs" / "accelerate" / "ddp.yaml"),
           "--num_processes", "2", "--main_process_port", "0", str(Path(ddp_dpo_worker.__file__)), str(tmp_path / "ddp"), "2"]
    launched = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    single = ddp_dpo_worker.train(tmp_path / "one", 4)  # meanwhile, in this process
    log, _ = launched.communicate(timeout=300)
    assert launched.returncode == 0, log[-3000:]

    ddp0, ddp1 = tmp_path / "ddp" / "rank0", tmp_path / "ddp" / "rank1"
    r_one, r_ddp = read_train_record(single), read_train_record(ddp0)
    assert r_one["steps"] == r_ddp["steps"] == 1 and r_one["pairs"] == r_ddp["pairs"] == 4
    assert abs(r_one["train_loss"] - r_ddp["train_loss"]) < 1e-5, (r_one["train_loss"], r_ddp["train_loss"])
    init, w_one, w0, w1 = _weights(Path(resolve_model("tiny-random"))), _weights(single), _weights(ddp0), _weights(ddp1)
    moved = max((w_one[k] - init[k]).abs().max().item() for k in init)
    assert moved > 1e-3  # the step did change the weights, by far more than the tolerance below
    assert max((w_one[k] - w0[k]).abs().max().item() for k in w_one) < 1e-6
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # the ranks hold identical weights after the all-reduce


def test_non_zero_rank_writes_no_record(tmp_path: Path, tiny_cfg, monkeypatch) -> None:
    """Rank 1 of a data-parallel run trains in a scratch tree it removes; the run folder, record and store are rank 0's."""
    from harness import runs

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = tiny_cfg("sft")
    assert runs.run(cfg) is None
    run_dir = Path(cfg.runs_dir) / runs.run_id(cfg)
    assert not (run_dir / "results.json").exists() and not (run_dir / "train").exists()
    assert not list(run_dir.glob(".rank*")) and not (Path(cfg.runs_dir) / "bench.sqlite").exists()
    monkeypatch.setenv("RANK", "0")
    assert runs.distributed_record(tiny_cfg("sft", ["train.grad_accum=3"])) == {
        "world_size": 2, "per_device_batch_size": 2, "grad_accum": 3, "effective_batch_size": 12, "launcher": "accelerate"}


def test_accelerate_command_defaults_to_ddp() -> None:
    from harness.cli import accelerate_command

    cmd = accelerate_command("ddp", 2, ["run", "--launcher", "accelerate", "--num-processes", "2", "--profile", "tiny"])
    assert cmd[:4] == [sys.executable, "-m", "accelerate.commands.launch", "--config_file"] and cmd[4].endswith("configs/accelerate/ddp.yaml")
    assert cmd[5:] == ["--num_processes", "2", "-m", "harness.cli", "run", "--profile", "tiny"]


# -- DeepSpeed presets ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset,stage", [("zero2", 2), ("zero3", 3)])
def test_deepspeed_preset_gives_the_trainer_a_consistent_config(preset: str, stage: int, tmp_path: Path) -> None:
    from harness.config import load_config
    from harness.scaleout import deepspeed_trainer_config

    cfg = load_config("gpu", ["train.batch_size=4", "train.grad_accum=8"])
    ds, args = deepspeed_trainer_config(REPO / "configs" / "accelerate" / f"{preset}.yaml", cfg, tmp_path)
    assert ds["zero_optimization"]["stage"] == stage
    assert ds["train_micro_batch_size_per_gpu"] == args.per_device_train_batch_size == 4
    assert ds["gradient_accumulation_steps"] == args.gradient_accumulation_steps == 8
    assert ds["train_batch_size"] == 4 * 8 * 8  # micro batch x accumulation x the preset's 8 processes
    assert ds["bf16"]["enabled"] is True and args.bf16 and not getattr(args, "fp16", False)
    assert ds.get("fp16", {}).get("enabled") in (None, False)
    if stage == 3:
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


def test_deepspeed_preset_refuses_an_inconsistent_run(tmp_path: Path) -> None:
    from harness.config import load_config
    from harness.errors import BenchError
    from harness.scaleout import deepspeed_trainer_config

    with pytest.raises(BenchError, match="bf16"):  # the preset trains in bf16, the run config says fp32
        deepspeed_trainer_config(REPO / "configs" / "accelerate" / "zero2.yaml", load_config("gpu", ["train.precision=fp32"]), tmp_path)


# -- vLLM settings and the release order ------------------------------------------------------------------------------

def test_vllm_settings_from_profile_and_set(monkeypatch) -> None:
    from harness import generation
    from harness.config import load_config
    from harness.errors import BenchError

    monkeypatch.setattr(generation, "visible_gpus", lambda: 4)
    gpu = load_config("gpu")
    assert generation.vllm_settings(gpu.generation, "cuda") == {
        "tensor_parallel_size": 4, "gpu_memory_utilization": 0.85, "max_model_len": 2048, "enforce_eager": False}
    over = load_config("gpu", ["generation.tensor_parallel_size=2", "generation.gpu_memory_utilization=0.5",
                               "generation.max_model_len=0", "generation.enforce_eager=true"])
    assert generation.vllm_settings(over.generation, "cuda") == {
        "tensor_parallel_size": 2, "gpu_memory_utilization": 0.5, "max_model_len": None, "enforce_eager": True}
    with pytest.raises(BenchError, match="gpu_memory_utilization"):
        generation.vllm_settings(load_config("gpu", ["generation.gpu_memory_utilization=1.5"]).generation)


def test_vllm_engine_gets_the_settings_and_is_torn_down(monkeypatch, tiny_model_path: Path) -> None:
    import importlib.machinery
    import types

    from harness import generation

    seen: dict = {}

    class FakeLLM:  # stands in for vllm.LLM: records the engine arguments
        def __init__(self, **kw):
            seen.update(kw)

    fake = types.ModuleType("vllm")
    fake.LLM, fake.__spec__ = FakeLLM, importlib.machinery.ModuleSpec("vllm", None)
    monkeypatch.setitem(sys.modules, "vllm", fake)
    settings = {"tensor_parallel_size": 2, "gpu_memory_utilization": 0.5, "max_model_len": 1024, "enforce_eager": True}
    gen = generation.make_generator(tiny_model_path, backend="vllm", device="cuda", vllm=settings)
    assert {k: seen[k] for k in settings} == settings and gen.llm is not None
    generation.close_generator(gen)
    assert gen.llm is None


def test_generation_is_freed_before_scoring(tiny_cfg, monkeypatch) -> None:
    """Every generator (the trained policy's and the SFT reference's) is closed before any score model scores."""
    from harness import generation, runs
    from harness.generation import DummyGenerator

    events: list[str] = []

    class Tracked(DummyGenerator):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            events.append("open")

        def close(self) -> None:
            events.append("close")

    monkeypatch.setattr(generation, "make_generator", lambda *a, **kw: Tracked(*a))
    def logging_scores(getter):  # annotators (Services.scorer) and judges (Services.judge) alike
        def get(self, kind):
            s = getter(self, kind)
            if not getattr(s, "_logged", False):
                score = s.score

                def logged(*a, **kw):
                    events.append("score")
                    return score(*a, **kw)

                s.score, s._logged = logged, True
            return s

        return get

    monkeypatch.setattr(runs.Services, "scorer", logging_scores(runs.Services.scorer))
    monkeypatch.setattr(runs.Services, "judge", logging_scores(runs.Services.judge))
    cfg = tiny_cfg("dpo-harmless", FAST + ["train.max_steps=1", "generation.max_model_len=512", "generation.enforce_eager=true"])
    record = runs.run(cfg)
    # one generator for the policy (eval prompts, XSTest's safe prompts, the harmful requests: one model load), one for
    # the SFT reference (win rates)
    gen = record["stages"]["generate"]
    assert events.count("open") == 2 and gen["refusal_prompts"] > 0 and gen["harmful_prompts"] > 0
    assert "score" in events
    open_now = 0
    for e in events:
        open_now += {"open": 1, "close": -1}.get(e, 0)
        assert e != "score" or open_now == 0, events
    # on CPU the record also carries the engine's CPU settings (harness.generation.vllm_settings)
    assert record["generation"]["vllm"] == {"tensor_parallel_size": 1, "gpu_memory_utilization": 0.9, "max_model_len": 512,
                                            "enforce_eager": True, "cpu": {"kvcache_space_gib": 1, "multiprocessing": False,
                                                                           "omp_threads_bind": "auto"}}
    assert record["distributed"]["world_size"] == 1


# -- bounded waits for a Ray address (issue 29): loopback only ----------------------------------------------------

@pytest.fixture
def silent_listener():
    """A loopback port that accepts TCP connections and never answers: a TCP check passes, Ray's handshake hangs."""
    import socket

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    yield f"127.0.0.1:{srv.getsockname()[1]}"
    srv.close()


@pytest.fixture
def hanging_ray(monkeypatch):
    """A stand-in `ray` module whose init blocks until the test ends, as Ray's C++ connect loop does (~40 s per call,
    not interruptible by Python signal handlers)."""
    import threading
    import types

    release = threading.Event()
    fake = types.SimpleNamespace(is_initialized=lambda: False, init=lambda **kw: release.wait(), shutdown=lambda: None)
    monkeypatch.setitem(sys.modules, "ray", fake)
    safety = threading.Timer(10, release.set)  # an unbounded wait then returns (and the test fails) instead of hanging
    safety.start()
    yield fake
    release.set()
    safety.cancel()


def test_joining_a_silent_address_gives_up_after_the_timeout(silent_listener, hanging_ray) -> None:
    import time

    from harness.errors import BenchError
    from harness.executors import ray_init

    t0 = time.monotonic()
    with pytest.raises(BenchError, match=rf"--address {silent_listener}: no Ray cluster answered within 1.5 s \(timed out\)"):
        ray_init(silent_listener, connect_timeout=1.5)
    assert 1.5 <= time.monotonic() - t0 < 4


def test_ctrl_c_ends_the_wait_for_a_ray_address(silent_listener, hanging_ray) -> None:
    import signal
    import threading
    import time

    from harness.executors import ray_init

    # Ctrl-C as a fresh process gets it (Python's default handler): an earlier test in this process may have left
    # another SIGINT handler behind (seen once in a full CI run, after the real Ray suite test)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            ray_init(silent_listener, connect_timeout=60)
        assert time.monotonic() - t0 < 5
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ray_address_checks() -> None:
    from harness.errors import BenchError
    from harness.executors import address_endpoint, check_address, check_timeout

    assert address_endpoint("ray://head:10001") == ("head", 10001) and address_endpoint("[::1]:6379") == ("::1", 6379)
    assert address_endpoint("auto") is None and address_endpoint("10.0.0.5:6379") == ("10.0.0.5", 6379)
    for bad in ("nohost", "host:", "host:70000", ":6379", "host:port"):
        with pytest.raises(BenchError, match="expected host:port"):
            address_endpoint(bad)
    for bad in (0, -1, float("inf"), float("nan"), 1e12):
        with pytest.raises(BenchError, match="finite number of seconds > 0"):
            check_timeout(bad, "--connect-timeout")
    with pytest.raises(BenchError, match="Connection refused"):
        check_address("127.0.0.1:1", 2)


def test_real_ray_join_ends_on_timeout_and_on_sigterm(tmp_path: Path, silent_listener) -> None:
    """The real CLI and the real Ray client against a loopback port that never answers: exit 2 with the error as the
    last line once --connect-timeout passes, and SIGTERM ends the process during the wait (it used to be ignored)."""
    import signal
    import time

    argv = [sys.executable, "-m", "harness.cli", "suite", "--methods", "sft", "--profile", "tiny", "--runs-dir", str(tmp_path / "runs"),
            "--executor", "ray", "--address", silent_listener]
    t0 = time.monotonic()
    out = subprocess.run([*argv, "--connect-timeout", "3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: --address {silent_listener}: no Ray cluster answered within 3 s")
    assert "Traceback" not in out.stderr and time.monotonic() - t0 < 60
    proc = subprocess.Popen([*argv, "--connect-timeout", "120"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # Ray logs this line when its connect loop starts
        if "Connecting to existing Ray cluster" in line:
            break
    time.sleep(1)
    assert proc.poll() is None, "the suite should still be waiting for the cluster"
    proc.send_signal(signal.SIGTERM)
    t1 = time.monotonic()
    proc.wait(timeout=20)
    assert time.monotonic() - t1 < 10 and proc.returncode in (-signal.SIGTERM, signal.SIGTERM)
