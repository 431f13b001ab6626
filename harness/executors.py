"""Executors for a grid of runs (`bench suite --executor ...`): in-process (the default) or Ray tasks.

Every executor runs `harness.runs.run(cfg)` once per (method, seed) and yields one outcome per grid cell as it
finishes: `{"method", "seed", "status": "finished"|"failed", "run_id", "error"}`. Because `run` resumes per stage
and returns the cached record of a finished run, rerunning a suite after its driver was killed skips the finished
runs and restarts the others from their last finished stage, whichever executor ran them.

Ray (`pip install -e '.[ray]'`): each cell is one Ray task asking for the run's `resources` section (CPUs, GPUs,
memory) from the profile or `--set resources.gpus=1`. With no address a local Ray instance is started (and shut
down at the end); `--address ray://host:10001` or `auto` joins an existing cluster, whose nodes need this package
installed and the runs folder on a shared filesystem.

Results: each worker writes its run folder and its status rows to the store through `harness.store` as a local run
does; the driver then **ingests** every returned record itself (`ingest_record`: results.json if missing + one
store upsert, idempotent). So the leaderboard the driver builds sees every finished run even when workers' stores
are node-local, and concurrent workers never write a finished record to the same SQLite file at the same time as
the driver does; the store's own locking (`sqlite3` busy timeout) serialises the workers' short status writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.errors import BenchError

log = logging.getLogger("bench")
EXECUTORS = ("local", "ray")
# Forwarded to Ray workers when set here: where data, caches and the hub live, and offline switches.
_FORWARD_ENV = ("BENCH_DATA_DIR", "BENCH_CACHE", "HF_HUB_OFFLINE", "HF_HOME", "HF_HUB_DISABLE_TELEMETRY", "TRL_EXPERIMENTAL_SILENCE",
                "TOKENIZERS_PARALLELISM", "WANDB_MODE", "WANDB_DIR", "WANDB_SILENT", "BENCH_QUIET", "XDG_CACHE_HOME", "PYTHONPATH")

Cell = tuple[str, int, Any]  # (method, seed, RunConfig)
# Seconds `--address` may take to answer before `bench suite` gives up (`--connect-timeout`): Ray's own connect loop
# retries for minutes and, inside its C++ client, does not see Ctrl-C or SIGTERM until a retry ends.
CONNECT_TIMEOUT_S = 30.0
MAX_WAIT_S = 86_400.0  # a day: a larger bound is a typo (and overflows the OS's timeout types)


def outcome(method: str, seed: int, record: dict[str, Any] | None = None, error: BaseException | None = None) -> dict[str, Any]:
    if error is None:
        return {"method": method, "seed": seed, "status": "finished", "run_id": (record or {}).get("run_id")}
    message = str(error) if isinstance(error, BenchError) else f"{type(error).__name__}: {error}"
    return {"method": method, "seed": seed, "status": "failed", "error": message}


def run_local(grid: list[Cell], execute: Callable[[Any], dict[str, Any]], on_start: Callable[[int, Cell], None] | None = None,
              errors_log: Path | None = None) -> Iterator[dict[str, Any]]:
    """One run after the other in this process; a failing run is recorded and the grid goes on."""
    for i, cell in enumerate(grid, 1):
        method, seed, cfg = cell
        if on_start:
            on_start(i, cell)
        try:
            yield outcome(method, seed, execute(cfg))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # one failing method must not stop the grid
            _log_error(errors_log, method, seed, traceback.format_exc())
            yield outcome(method, seed, error=exc)


def _ray_task(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """Body of one Ray task: the whole run (resuming finished stages) in the worker process."""
    from harness.config import config_from_dict
    from harness.runs import run

    return run(config_from_dict(cfg_dict))


def ray_options(cfg: Any) -> dict[str, Any]:
    """The task's resource request from the run's `resources` section."""
    r = cfg.resources
    if r.cpus <= 0 or r.gpus < 0 or r.memory_gb < 0:
        raise BenchError(f"resources: cpus must be > 0, gpus and memory_gb >= 0 (got cpus={r.cpus}, gpus={r.gpus}, "
                         f"memory_gb={r.memory_gb}); e.g. --set resources.cpus=1")
    opts: dict[str, Any] = {"num_cpus": r.cpus, "num_gpus": r.gpus, "max_retries": 0}
    if r.memory_gb > 0:
        opts["memory"] = int(r.memory_gb * 2**30)
    return opts


def _absolute(cfg: Any) -> Any:
    """Workers may start in another directory: make the runs and data folders absolute before shipping the config."""
    import dataclasses

    data = cfg.data
    if data.data_dir:
        data = dataclasses.replace(data, data_dir=str(Path(data.data_dir).resolve()))
    return dataclasses.replace(cfg, runs_dir=str(Path(cfg.runs_dir).resolve()), data=data)


def check_timeout(seconds: float, option: str) -> None:
    """A wait bound given by the user: a number of seconds in (0, MAX_WAIT_S], or a one-line BenchError."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= MAX_WAIT_S:  # NaN fails too
        raise BenchError(f"{option} {seconds}: give a finite number of seconds > 0 and at most {MAX_WAIT_S:g}, "
                         f"e.g. {option} {CONNECT_TIMEOUT_S:g}")


def address_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) that a Ray address names (`host:port`, `ray://host:port`, `[::1]:port`); None for `auto` and
    `local`, which Ray resolves itself. A malformed address is a BenchError."""
    if address in ("auto", "local"):
        return None
    rest = address.split("://", 1)[1] if "://" in address else address
    host, _, port = rest.rstrip("/").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BenchError(f"--address {address}: expected host:port (e.g. 10.0.0.5:6379, ray://head:10001) or auto")
    return host, int(port)


def _unreachable(address: str, seconds: float, why: str) -> BenchError:
    return BenchError(f"--address {address}: no Ray cluster answered within {seconds:g} s ({why}); start one with "
                      "`ray start --head`, check the address, raise --connect-timeout, or drop --address for a local instance")


def check_address(address: str, connect_timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Preflight of `--address`: well-formed, and something accepts a TCP connection there within `connect_timeout`
    seconds (`auto` and `local` are left to Ray). Nothing listening fails at once, a silent host after the timeout."""
    check_timeout(connect_timeout, "--connect-timeout")
    endpoint = address_endpoint(address)
    if endpoint is None:
        return
    try:
        socket.create_connection(endpoint, timeout=connect_timeout).close()
    except OSError as exc:  # refused, unreachable, unknown host, or socket.timeout
        raise _unreachable(address, connect_timeout, exc.strerror or str(exc) or type(exc).__name__) from None


def ray_init(address: str | None, num_cpus: int | None = None, connect_timeout: float = CONNECT_TIMEOUT_S) -> bool:
    """Start (no address) or join (address) Ray; returns True when this call started it (and must shut it down).
    An instance already initialised in this process (tests) is reused as it is.

    Joining is bounded by `connect_timeout` seconds: a TCP connect to the address first (nothing listening fails at
    once), then `ray.init` in a helper thread that this one waits for (`_join`), so Ctrl-C and SIGTERM end it."""
    if address:
        check_address(address, connect_timeout)
    try:
        import ray
    except ImportError:
        raise BenchError("--executor ray needs Ray: pip install -e '.[ray]' (make install does this)") from None
    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in _FORWARD_ENV if k in os.environ}
    kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True, "runtime_env": {"env_vars": env}}
    if not address:
        if num_cpus:
            kw["num_cpus"] = num_cpus
        ray.init(**kw)
        return True
    kw["address"] = address
    _join(ray, kw, address, connect_timeout)
    return True


def _join(ray: Any, kw: dict[str, Any], address: str, timeout: float) -> None:
    """`ray.init(address=...)` in a helper thread, waited for at most `timeout` seconds by this thread. Ray's connect
    loop blocks inside its C++ client for up to ~40 s per call, where no Python signal handler runs; waiting here in
    short joins keeps Ctrl-C (KeyboardInterrupt) and SIGTERM (the default action: Ray sets its handler only on the
    main thread) working. On timeout the helper is left as a daemon thread: the command exits right after."""
    box: dict[str, BaseException] = {}

    def connect() -> None:
        try:
            ray.init(**kw)
        except BaseException as exc:  # noqa: BLE001  (handed to the waiting thread)
            box["error"] = exc

    helper = threading.Thread(target=connect, name="bench-ray-connect", daemon=True)
    helper.start()
    deadline = time.monotonic() + timeout
    while helper.is_alive() and time.monotonic() < deadline:
        helper.join(min(0.5, max(0.0, deadline - time.monotonic())))
    if helper.is_alive():
        raise _unreachable(address, timeout, "timed out")
    error = box.get("error")
    if isinstance(error, (ConnectionError, RuntimeError)):  # RuntimeError: Ray's "Failed to connect to GCS"
        with contextlib.suppress(Exception):
            ray.shutdown()
        raise _unreachable(address, timeout, " ".join(str(error).split())[:200]) from None
    if error is not None:
        raise error


def run_ray(grid: list[Cell], address: str | None = None, on_start: Callable[[int, Cell], None] | None = None,
            errors_log: Path | None = None, num_cpus: int | None = None,
            connect_timeout: float = CONNECT_TIMEOUT_S) -> Iterator[dict[str, Any]]:
    """Every cell as a Ray task, all submitted at once; Ray runs as many side by side as the resources allow.
    Outcomes come back in completion order; the driver ingests each record (module docstring)."""
    import ray

    started = ray_init(address, num_cpus, connect_timeout)
    try:
        task = ray.remote(_ray_task)
        pending: dict[Any, Cell] = {}
        for i, cell in enumerate(grid, 1):
            method, seed, cfg = cell
            cfg = _absolute(cfg)
            ref = task.options(name=f"bench-{method}-s{seed}", **ray_options(cfg)).remote(cfg.to_dict())
            pending[ref] = (method, seed, cfg)
            if on_start:
                on_start(i, cell)
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            method, seed, cfg = pending.pop(ref)
            try:
                record = ray.get(ref)
                ingest_record(cfg.runs_dir, record)
                yield outcome(method, seed, record)
            except ray.exceptions.RayTaskError as exc:
                inner = getattr(exc, "cause", None)  # the exception the run raised (BenchError: its one-line message)
                _log_error(errors_log, method, seed, str(exc))
                yield outcome(method, seed, error=inner if isinstance(inner, BaseException) else exc)
            except Exception as exc:  # a worker died (OOM killer, node lost): record it, keep going
                _log_error(errors_log, method, seed, traceback.format_exc())
                yield outcome(method, seed, error=exc)
    finally:
        if started:
            ray.shutdown()  # a killed driver takes its local instance (and the runs in flight) with it


def ingest_record(runs_dir: str | Path, record: dict[str, Any] | None) -> None:
    """Driver-side ingestion of a finished run's record: results.json (when the worker's folder is elsewhere) and
    the store row. Idempotent: a record already there is written again unchanged."""
    if not record:
        return
    from harness.io import write_json
    from harness.store import upsert_run

    path = Path(runs_dir) / record["run_id"] / "results.json"
    if not path.exists():
        write_json(path, record)
    upsert_run(runs_dir, record["run_id"], method=record["method"], dataset=record["dataset"], model=record["model"],
               profile=record["profile"], seed=record["seed"], suite=record.get("suite"), status="finished", stage="metrics",
               results=record)


def _log_error(path: Path | None, method: str, seed: int, text: str) -> None:
    if path is None:
        return
    with path.open("a", encoding="utf-8") as f:
        f.write(f"== {method} seed {seed}\n{text}\n")
