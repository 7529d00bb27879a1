"""A batch on a Ray cluster: ``tal extract|detect ... --ray [ADDRESS]``.

The same batch as ``batch.run_batch``, spread over worker processes on one or many machines:

1. ``ray_connect.connect``: join the cluster at ADDRESS (``auto``, ``HOST:PORT``; asked first
   whether it is a Ray cluster and whether it wants a token), or start/join a local instance.
2. A pool of ``workers`` plain Ray actors (``_VideoWorker``); each builds the job's worker (the
   extractor or the detector) once. The driver holds the queue of paths and small status
   records, never frames or features, and hands each live, idle actor one video at a time.
3. Each video goes through ``batch.run_item``, the function the local loop calls: the same lock,
   the same resume check, the same per-video function, the same atomic writes. Outputs go where
   ``-o`` points, which must be storage every node sees. CPU results are bitwise identical
   whichever path made them.
4. Faults: the driver keeps the accounts. Before a video's work, its actor tells the tracker
   (a small actor on the driver's node) and waits for the receipt: a *try* is a worker that
   started the video. An actor that dies (its process, or its whole node) gives its video back
   to the queue, for a live actor, until it has had ``retries + 1`` tries; a video that never
   started costs no try. A lost node is one line (``tal: --ray: node 10.0.0.7 lost: 2 videos
   moved``), every actor of that node is replaced at once, and the summary names what was redone.
   If the driver dies, its actors stop with it (each one's janitor process removes the lock
   file of the video it was on) and the same command resumes.

A job (``jobs.ExtractJob``, ``jobs.DetectJob``) is a small picklable description of the work;
``job.setup()`` returns a worker with ``process``, ``is_done``, ``outputs`` and ``lock_dir``.

``TAL_WORKER_LOG`` (tests, benchmarks): a file to which each actor appends
``<pid> <video_id> <event> <peak RSS KiB> <unix time s>`` when it starts (``start``) and ends a video.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tal_pipeline.batch import BatchReport
from tal_pipeline.ray_connect import LOCAL, connect
from tal_pipeline.ray_worker import RayOptions, plan_workers

log = logging.getLogger(__name__)

__all__ = ["LOCAL", "RayBatchReport", "RayOptions", "connect", "plan_workers", "run_batch_ray"]


@dataclass
class RayBatchReport(BatchReport):
    """``BatchReport`` plus what the cluster survived, named in the summary."""

    redone: list[str] = field(default_factory=list)  # ids a dead worker started, done by another
    lost_nodes: list[str] = field(default_factory=list)  # addresses of nodes lost mid-run

    def summary(self) -> str:
        text = super().summary()
        if self.redone:
            text += f"; {len(self.redone)} redone after a worker died"
        if self.lost_nodes:
            text += f" (node{'s' if len(self.lost_nodes) > 1 else ''} lost: " \
                    f"{', '.join(self.lost_nodes)})"
        return text


def run_batch_ray(
    items: Mapping[str, Path],
    job,
    options: RayOptions,
    desc: str = "videos",
    progress: bool | None = None,
    problems: Iterable[tuple[Path, str]] = (),
) -> RayBatchReport:
    """``batch.run_batch`` on Ray: the same report, lines and progress bar (module docstring)."""
    connect(options.address)  # first: it sets what Ray reads on import
    from tal_pipeline.ray_pool import Pool

    report = RayBatchReport()
    for where, cause in problems:
        print(f"tal: {where}: {cause}", file=sys.stderr)
        report.failed.append((str(where), cause))
    if not items:
        return report
    report.paths.update({vid: str(path) for vid, path in items.items()})
    start = time.monotonic()
    pool = Pool(items, job, options, report)
    try:
        pool.run(desc, progress)
    finally:
        pool.close()
    log.debug("ray batch: %d videos in %.1f s", len(items), time.monotonic() - start)
    return report
