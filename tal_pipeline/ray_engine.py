"""A batch on a Ray cluster (Ray Data): ``tal extract|detect ... --ray [ADDRESS]``.

The same batch as ``batch.run_batch``, spread over worker processes on one or many machines:

1. ``connect``: join the cluster at ADDRESS (``auto``, ``HOST:PORT``), or start/join a local
   instance when no address is given. A cluster started with ``ray start`` uses token
   authentication: when a token is at hand (``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token``) the
   driver turns it on itself. A failure to connect is one ``InputError`` line.
2. One row per video (``{"vid", "path"}``): the driver holds paths and small status records,
   never frames or features. ``Dataset.map_batches`` runs ``_VideoActor`` (one video per call)
   in a pool of ``workers`` actors; each actor builds the job's worker (the extractor or the
   detector) once, in ``__init__``.
3. Each video goes through ``batch.run_item``, the function the local loop calls: the same lock,
   the same resume check, the same per-video function, the same atomic writes. The outputs go
   where ``-o`` points, which must be storage every node sees (NFS, a mounted bucket). So a
   local run, a cluster, or two clusters on one folder never corrupt or duplicate an output,
   and CPU results are bitwise identical whichever path made them.
4. Faults: a worker process that dies inside a video (OOM, a lost node) is replaced; the video is
   tried again up to ``retries`` times, then listed as failed ("worker died ..."). The atomic
   writes leave no partial file. If the driver dies, its workers stop with it and the same
   command resumes, skipping what is done.

A job (``jobs.ExtractJob``, ``jobs.DetectJob``) is a small picklable description of the work;
``job.setup()`` returns a worker with ``process(vid, path)``, ``is_done(vid, path)``,
``outputs(vid)`` and ``lock_dir``, the four things ``batch.run_item`` needs.

``TAL_WORKER_LOG`` (tests, benchmarks): a file to which each actor appends
``<pid> <video_id> <event> <peak RSS KiB>`` when it starts (``start``) and ends a video, so a
test can kill the process holding a video and a benchmark can read each worker's peak memory.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tal_pipeline.batch import BatchReport, failure_cause, run_item
from tal_pipeline.errors import InputError, NotAvailableError, UsageError

log = logging.getLogger(__name__)

LOCAL = None  # RayOptions.address for "start or join a local Ray instance"


@dataclass(frozen=True)
class RayOptions:
    address: str | None = LOCAL  # None: local instance; "auto" or "HOST:PORT": a running cluster
    workers: int | None = None  # actors in the pool; None: one per free CPU slot (or GPU share)
    threads: int = 1  # torch threads of one actor (the job's): the CPU slots it reserves
    gpus_per_worker: float = 0.0  # GPUs one actor reserves; 0.5 puts two actors on one GPU
    retries: int = 2  # extra tries of a video whose worker process died inside it


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (or start/join a local one); InputError if it fails."""
    if not log.isEnabledFor(logging.DEBUG):  # Ray's C++ core logs to our stderr otherwise
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
        warnings.filterwarnings("ignore", message=r".*ray_remote_args.*")
    if address is not LOCAL and "RAY_AUTH_MODE" not in os.environ and _auth_token_available():
        # `ray start` turns token authentication on; a driver must say so to be let in (Ray
        # reads this when it is imported)
        os.environ["RAY_AUTH_MODE"] = "token"
    try:
        import ray
    except ImportError:
        raise NotAvailableError("--ray needs Ray: pip install 'tal-pipeline[ray]' "
                                "(or pip install 'ray[data]')") from None

    if ray.is_initialized():
        return
    quiet = logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.ERROR
    kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": quiet}
    if address is LOCAL:
        kwargs["include_dashboard"] = False
    where = "a local Ray instance" if address is LOCAL else f"the Ray cluster at {address}"
    try:
        _reachable(address)  # Ray itself retries a dead address for minutes
        ray.init(address=address, **kwargs)
    except UsageError:
        raise
    except Exception as err:  # noqa: BLE001 (ConnectionError, AuthenticationError, RuntimeError...)
        cause = " ".join(str(err).split())[:300] or type(err).__name__
        hint = ("start one with `ray start --head` on the head machine and pass its HOST:PORT"
                if address is not LOCAL else "check `ray status` and the machine's resources")
        raise InputError(f"--ray: cannot connect to {where}: {cause} ({hint})") from None
    _quiet_ray_data()


def _reachable(address: str | None, timeout: float = 5.0) -> None:
    """A HOST:PORT that refuses or ignores a TCP connection: OSError at once (``auto`` and the
    local instance are Ray's to find)."""
    if address is LOCAL or address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--ray: expected HOST:PORT or auto, got {address!r}")
    import socket

    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
        pass


def _auth_token_available() -> bool:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    return os.path.isfile(path)


def _quiet_ray_data() -> None:
    """Our progress bar and failure lines, not Ray Data's: its bars and per-block error
    tracebacks would bury them (a failed video is reported by us, by name)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    ctx.max_errored_blocks = -1  # a row whose worker kept dying is skipped; we name it below
    if not log.isEnabledFor(logging.DEBUG):
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def plan_workers(options: RayOptions, videos: int) -> tuple[int, float]:
    """(actors, CPU slots each): by default one actor per ``threads`` free CPU slots, or one per
    GPU share when actors take GPUs; never more actors than videos. An explicit ``workers`` that
    does not fit at ``threads`` slots each gets a fair share of the free CPUs instead (the
    threads stay: they decide the exact result bits)."""
    import ray

    free = ray.available_resources()
    cpus = float(free.get("CPU", 0.0))
    if options.workers is not None:
        n = options.workers
    elif options.gpus_per_worker > 0:
        n = int(free.get("GPU", 0.0) / options.gpus_per_worker + 1e-9)
        if n < 1:
            raise InputError("--ray: the cluster has no free GPU for --gpus-per-worker "
                             f"{options.gpus_per_worker:g}")
    else:
        n = max(1, int(cpus / options.threads + 1e-9))
    n = max(1, min(n, videos))
    each = float(options.threads)
    if cpus > 0 and n * each > cpus:
        each = cpus / n
    return n, each


class _VideoActor:
    """One Ray Data actor: the job's worker built once, then one video per call."""

    def __init__(self, job) -> None:
        self.worker = job.setup()
        self.pid = os.getpid()

    def __call__(self, rows: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"vid": [], "outcome": [], "cause": [], "pid": []}
        for vid, path in zip(rows["vid"], rows["path"]):
            vid, path = str(vid), Path(str(path))
            _note_worker(self.pid, vid, "start")
            w = self.worker
            try:
                outcome, cause = run_item(vid, path, w.process, w.is_done, w.lock_dir, w.outputs), ""
            except Exception as err:  # one bad video fails alone, as on one machine
                log.debug("%s failed", path, exc_info=True)
                outcome, cause = "failed", failure_cause(err, path)
            _note_worker(self.pid, vid, outcome)
            out["vid"].append(vid)
            out["outcome"].append(outcome)
            out["cause"].append(cause)
            out["pid"].append(self.pid)
        return out


def _note_worker(pid: int, vid: str, event: str) -> None:
    """``TAL_WORKER_LOG``: ``<pid> <video_id> <event> <peak RSS in KiB>`` (tests, benchmarks)."""
    path = os.environ.get("TAL_WORKER_LOG")
    if path:
        from tal_pipeline.memory import peak_rss_kib

        peak = peak_rss_kib()
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{pid} {vid} {event} {peak}\n")


def run_batch_ray(
    items: Mapping[str, Path],
    job,
    options: RayOptions,
    desc: str = "videos",
    progress: bool | None = None,
    problems: Iterable[tuple[Path, str]] = (),
) -> BatchReport:
    """``batch.run_batch`` on Ray: the same report, lines and progress bar (module docstring)."""
    connect(options.address)  # first: it sets what Ray reads on import
    import ray.data
    from tqdm import tqdm

    report = BatchReport()
    for where, cause in problems:
        print(f"tal: {where}: {cause}", file=sys.stderr)
        report.failed.append((str(where), cause))
    if not items:
        return report
    workers, cpus_each = plan_workers(options, len(items))
    report.paths.update({vid: str(path) for vid, path in items.items()})
    rows = [{"vid": vid, "path": str(path)} for vid, path in items.items()]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))  # a block per video: a dead
    ds = ds.map_batches(  # worker costs one video's retry, never its neighbours'
        _VideoActor,
        fn_constructor_args=(job,),
        batch_size=1,
        concurrency=workers,
        num_cpus=cpus_each,
        num_gpus=options.gpus_per_worker or None,
        max_restarts=-1,  # a dead actor is replaced...
        max_task_retries=options.retries,  # ...and its video tried again, a bounded number of times
    )
    seen: set[str] = set()
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    start = time.monotonic()
    with tqdm(total=len(items), desc=desc, unit="video", file=sys.stderr, disable=disable) as bar:
        bar.set_postfix_str(f"{workers} workers", refresh=False)
        try:
            for row in ds.iter_rows():
                vid, outcome = str(row["vid"]), str(row["outcome"])
                seen.add(vid)
                if outcome == "failed":
                    path, cause = report.paths[vid], str(row["cause"])
                    tqdm.write(f"tal: {path}: {cause}", file=sys.stderr)
                    report.failed.append((path, cause))
                else:
                    getattr(report, outcome).append(vid)
                bar.update(1)
        except Exception as err:  # the pool itself failed (e.g. every worker's setup)
            if not seen:
                raise InputError(f"--ray: the workers could not start: {_ray_cause(err)}") from None
            raise
    cause = f"the worker process died while on it ({options.retries + 1} tries)"
    for vid, path in items.items():
        if vid not in seen:  # every try's worker died: the row never came back
            print(f"tal: {path}: {cause}", file=sys.stderr)
            report.failed.append((str(path), cause))
    log.debug("ray batch: %d videos in %.1f s on %d workers", len(items),
              time.monotonic() - start, workers)
    return report


def _ray_cause(err: BaseException) -> str:
    """The innermost useful line of a Ray exception (they wrap the worker's traceback)."""
    text = str(getattr(err, "cause", None) or err)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    tail = [ln for ln in lines if not ln.startswith(("File ", "Traceback", "^"))]
    return (tail[-1] if tail else type(err).__name__)[:300]
