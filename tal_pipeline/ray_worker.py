"""What runs on a Ray cluster's workers, and what the pool (``ray_pool``) needs to drive them.

``RayOptions`` (the pool's size and each actor's share), ``plan_workers`` (how many actors fit),
``_VideoWorker`` (one actor: the job's worker built once, then one video per call through
``batch.run_item``, the local loop's function, with a janitor process that removes the video's
lock file once the worker is gone, whatever killed it) and ``_Tracker`` (the driver's receipts
of which worker started which video: a try counts only once recorded there). The orchestration is in
``ray_pool``; ``ray_engine.run_batch_ray`` is the entry point.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from tal_pipeline.batch import failure_cause, run_item
from tal_pipeline.errors import InputError
from tal_pipeline.locks import lock_path
from tal_pipeline.ray_connect import LOCAL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RayOptions:
    address: str | None = LOCAL  # None: local instance; "auto" or "HOST:PORT": a running cluster
    workers: int | None = None  # actors in the pool; None: one per free CPU slot (or GPU share)
    threads: int = 1  # torch threads of one actor (the job's): the CPU slots it reserves
    gpus_per_worker: float = 0.0  # GPUs one actor reserves; 0.5 puts two actors on one GPU
    retries: int = 2  # extra tries of a video whose worker died inside it
    start_timeout_s: float = 60.0  # no worker placed on a node for this long: give up, say why


def plan_workers(options: RayOptions, videos: int) -> tuple[int, float]:
    """(actors, CPU slots each): by default one actor per ``threads`` free CPU slots, or one per
    GPU share when actors take GPUs; never more actors than videos. An actor never asks for more
    CPUs than the largest node has, and an explicit ``workers`` that does not fit at ``threads``
    slots each gets a fair share of the free CPUs instead (the threads stay: they decide the
    exact result bits)."""
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
    nodes = [nd["Resources"] for nd in ray.nodes() if nd["Alive"]]
    largest = max((float(r.get("CPU", 0.0)) for r in nodes), default=0.0)
    most_gpus = max((float(r.get("GPU", 0.0)) for r in nodes), default=0.0)
    if largest <= 0 or options.gpus_per_worker > most_gpus:
        need = (f"{options.gpus_per_worker:g} GPU" if options.gpus_per_worker > most_gpus
                else "a CPU")
        raise InputError(f"--ray: no worker can ever start: each needs {need} and no node of "
                         f"the cluster has one ({len(nodes)} node{'s' if len(nodes) != 1 else ''})")
    each = min(each, largest)  # more threads than a node's CPUs: it runs there, oversubscribed
    return n, each


class _Tracker:
    """The driver's receipts (an actor on the driver's node, so it outlives any worker node):
    which worker slots got a process, and how many workers started each video."""

    def __init__(self) -> None:
        self.starts: dict[str, int] = {}
        self.placed: set[int] = set()

    def note_placed(self, slot: int) -> None:
        self.placed.add(slot)

    def note_start(self, vid: str) -> int:
        self.starts[vid] = self.starts.get(vid, 0) + 1
        return self.starts[vid]

    def note_busy(self, vid: str) -> None:
        """The start noted was an ask that found the video locked elsewhere: no try."""
        self.starts[vid] -= 1

    def tries(self, vid: str) -> int:
        return self.starts.get(vid, 0)

    def placed_slots(self) -> set[int]:
        return set(self.placed)


class _VideoWorker:
    """One Ray actor: the job's worker built once, then one video per call."""

    def __init__(self, job, tracker, slot: int) -> None:
        import ray

        from tal_pipeline.ray_connect import quiet_ray

        quiet_ray()
        self.janitor = _start_janitor()
        self.tracker = tracker
        self.pid = os.getpid()
        ray.get(tracker.note_placed.remote(slot))  # before the slow part: a process exists
        self.worker = job.setup()

    def where(self) -> tuple[str, str]:
        """(node id, the worker's lock folder) once set up."""
        import ray

        return ray.get_runtime_context().get_node_id(), str(self.worker.lock_dir)

    def run(self, vid: str, path: str) -> tuple[str, str]:
        """(outcome, cause) of one video, as ``batch.run_batch`` records it."""
        import ray

        ray.get(self.tracker.note_start.remote(vid))  # the try counts only once it is recorded
        _note_worker(self.pid, vid, "start")
        w = self.worker
        _tell_janitor(self.janitor, None if w.lock_dir is None else lock_path(w.lock_dir, vid))
        try:
            outcome, cause = run_item(vid, Path(path), w.process, w.is_done, w.lock_dir,
                                      w.outputs), ""
        except Exception as err:  # one bad video fails alone, as on one machine
            log.debug("%s failed", path, exc_info=True)
            outcome, cause = "failed", failure_cause(err, path)
        _tell_janitor(self.janitor, None)
        if outcome == "busy":  # it did no work on it (a moved video still locked)
            ray.get(self.tracker.note_busy.remote(vid))
        _note_worker(self.pid, vid, outcome)
        return outcome, cause


# The janitor's program: a small process of its own (see _start_janitor), out of the worker's
# process tree, so Ray's kill of a worker's children spares it; it reads the lock path of the
# video in flight (a JSON string a line; an empty line: none) until the worker's end closes the
# pipe, then removes that lock file if no process holds it (the kernel dropped the dead
# worker's lock; a retry elsewhere that holds it keeps it)
_JANITOR = """
import json, os, sys, time
if os.fork():
    os._exit(0)
path = None
for line in sys.stdin:
    path = json.loads(line) if line.strip() else None
if path:
    from tal_pipeline.locks import try_lock
    for _ in range(40):  # the dead worker's descriptors may close after the pipe's
        lock = try_lock(path) if os.path.exists(path) else None
        if lock is not None or not os.path.exists(path):
            if lock is not None:
                lock.release()
            break
        time.sleep(0.05)
"""


def _start_janitor():
    """The pipe to a janitor (``_JANITOR``) that removes the lock file of the video this worker
    is on once the worker is gone, however it went: Ray ends a worker whose driver died from
    C++ (``_Exit``, after a kill request from the GCS or when its raylet dies), so no Python
    runs in it then. None if it cannot start (the lock file then stays until the next run)."""
    import subprocess
    import sys

    try:
        proc = subprocess.Popen([sys.executable, "-c", _JANITOR], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, text=True)
        proc.wait(timeout=30)  # the first process forks the janitor and ends at once
    except (OSError, subprocess.SubprocessError) as err:
        log.debug("no lock janitor: %s", err)
        return None
    return proc.stdin


def _tell_janitor(pipe, path: Path | None) -> None:
    if pipe is None:
        return
    try:
        pipe.write((json.dumps(str(path)) if path else "") + "\n")
        pipe.flush()
    except (OSError, ValueError):  # the janitor is gone: the next run removes a left lock
        pass


def _note_worker(pid: int, vid: str, event: str) -> None:
    """``TAL_WORKER_LOG``: ``<pid> <video_id> <event> <peak RSS in KiB> <unix time s>`` (tests,
    benchmarks)."""
    path = os.environ.get("TAL_WORKER_LOG")
    if path:
        from tal_pipeline.memory import peak_rss_kib

        peak = peak_rss_kib()
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{pid} {vid} {event} {peak} {time.time():.3f}\n")


def raylet_reachable(address: str, port: int, timeout: float = 1.0) -> bool:
    """Whether a node's raylet still accepts a connection (a dead node's does not)."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def ray_cause(err: BaseException) -> str:
    """The innermost useful line of a Ray exception (they wrap the worker's traceback)."""
    text = str(getattr(err, "cause", None) or err)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    tail = [ln for ln in lines if not ln.startswith(("File ", "Traceback", "^"))]
    line = tail[-1] if tail else type(err).__name__
    return re.sub(r"^tal_pipeline\.errors\.\w+: ", "", line)[:300]  # our own error: its words

