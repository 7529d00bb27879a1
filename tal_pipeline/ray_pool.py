"""The driver's side of ``--ray``: a pool of video actors, a queue, and the accounts of tries.

One call per actor at a time, so a video is only ever in one place: the queue, an actor, or the
report. ``ray.wait`` on the calls in flight; an answer records the video; an actor's death
(``RayActorError``: its process died, its node was lost, or it cannot be reached) gives its
video back to the queue unless the tracker counts ``retries + 1`` tries. Ray restarts nothing
by itself (``max_restarts=0``, ``max_task_retries=0``): a replacement actor is asked for here,
where the accounts are, and a lost node's actors are all given up at once.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from tal_pipeline.errors import InputError
from tal_pipeline.locks import lock_path, remove_left_lock
from tal_pipeline.ray_worker import (
    _Tracker,
    _VideoWorker,
    plan_workers,
    ray_cause,
    raylet_reachable,
)

log = logging.getLogger(__name__)

WAIT_S = 0.5  # the loop's tick: how often it looks for late re-asks and stuck starts
# A video moved off a dead worker may find its lock still held while the dead holder's lock is
# released (not --busy-wait's case: no other live run holds it)
MOVED_RETRY_S = 2.0  # seconds between asks
MOVED_RETRIES = 15  # asks before it counts as busy elsewhere


@dataclass
class _Slot:
    """One actor of the pool and what it is doing."""

    actor: Any
    node: str | None = None  # node id once the actor is set up (answered ``where``)
    vid: str | None = None  # the video it is on


class Pool:
    def __init__(self, items, job, options, report) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray, self.items, self.job, self.options, self.report = ray, items, job, options, report
        self.queue: deque[str] = deque(items)
        self.later: list[tuple[float, str]] = []  # (when, id): a moved video found locked
        self.busy_asks: dict[str, int] = {}
        self.moved: set[str] = set()  # ids given back to the queue at least once
        self.died_in: set[str] = set()  # ids a worker died inside (a started try)
        self.slots: dict[int, _Slot] = {}  # slot id (one per actor ever asked for) -> slot
        self.calls: dict[Any, tuple[str, int]] = {}  # ObjectRef -> ("where" | "run", slot id)
        self.lock_dir: str | None = None
        self.early_deaths = 0  # actors that died before they were set up
        self.ever_ready = False
        self.since = time.monotonic()  # last time an actor was set up or working
        self.workers, self.cpus_each = plan_workers(options, len(items))
        here = ray.get_runtime_context().get_node_id()
        self.tracker = ray.remote(_Tracker).options(
            num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)
        ).remote()
        self.actor_cls = ray.remote(_VideoWorker).options(
            num_cpus=self.cpus_each, num_gpus=options.gpus_per_worker, max_restarts=0,
            max_task_retries=0)
        self.next_id = 0
        for _ in range(self.workers):
            self._spawn()

    # -- the loop

    def run(self, desc: str, progress: bool | None) -> None:
        from tqdm import tqdm

        disable = (not sys.stderr.isatty()) if progress is None else not progress
        with tqdm(total=len(self.items), desc=desc, unit="video", file=sys.stderr,
                  disable=disable) as self.bar:
            self.bar.set_postfix_str(f"{self.workers} workers", refresh=False)
            while self.queue or self.later or any(s.vid for s in self.slots.values()):
                self._dispatch()
                if self.calls:
                    ready, _ = self.ray.wait(list(self.calls), num_returns=1, timeout=WAIT_S)
                    for ref in ready:
                        self._answer(ref)
                else:  # only re-asks waiting for their time, or no actor left
                    time.sleep(WAIT_S)
                self._check_stuck()

    def close(self) -> None:
        """Give back every actor (a pending one holds a place in the cluster's queue)."""
        for slot in self.slots.values():
            self._kill(slot.actor)
        self._kill(self.tracker)
        self.slots.clear()

    def _spawn(self) -> None:
        sid, self.next_id = self.next_id, self.next_id + 1
        actor = self.actor_cls.remote(self.job, self.tracker, sid)
        self.slots[sid] = _Slot(actor)
        self.calls[actor.where.remote()] = ("where", sid)

    def _dispatch(self) -> None:
        now = time.monotonic()
        for when, vid in [x for x in self.later if x[0] <= now]:
            self.later.remove((when, vid))
            self.queue.append(vid)
        for sid, slot in self.slots.items():
            if not self.queue:
                break
            if slot.node is not None and slot.vid is None:
                slot.vid = self.queue.popleft()
                self.calls[slot.actor.run.remote(slot.vid, str(self.items[slot.vid]))] = ("run", sid)

    def _answer(self, ref) -> None:
        kind, sid = self.calls.pop(ref)
        slot = self.slots.get(sid)
        if slot is None:  # an actor given up already (its node was lost)
            return
        try:
            value = self.ray.get(ref)
        except self.ray.exceptions.RayError as err:  # RayActorError: died, lost, unreachable
            self._lost(sid, err)
            return
        if kind == "where":
            slot.node, self.lock_dir = value
            self.ever_ready = True
            return
        vid, slot.vid = slot.vid, None
        self._record(vid, *value)

    # -- accounts

    def _record(self, vid: str, outcome: str, cause: str) -> None:
        if outcome == "busy" and vid in self.moved and self.busy_asks.get(vid, 0) < MOVED_RETRIES:
            # most likely the lock of our own dead worker, whose process is still going away
            self.busy_asks[vid] = self.busy_asks.get(vid, 0) + 1
            self.later.append((time.monotonic() + MOVED_RETRY_S, vid))
            return
        if outcome == "skipped" and vid in self.died_in:
            outcome = "done"  # the dead try finished it (its answer was lost, not its work)
        if outcome == "failed":
            self._fail(vid, cause)
            return
        if vid in self.died_in:
            self.report.redone.append(vid)
        getattr(self.report, outcome).append(vid)
        self.bar.update(1)

    def _fail(self, vid: str, cause: str) -> None:
        path = self.report.paths[vid]
        self.bar.write(f"tal: {path}: {cause}", file=sys.stderr)
        self.report.failed.append((path, cause))
        self.bar.update(1)

    def _give_back(self, vid: str | None) -> None:
        """A video whose actor died: to the queue again, or failed after its last try."""
        if vid is None:
            return
        tries = self.ray.get(self.tracker.tries.remote(vid))
        self.moved.add(vid)
        if tries:
            self.died_in.add(vid)
        if tries >= self.options.retries + 1:
            self._fail(vid, f"the worker process died while on it ({tries} tries)")
            if self.lock_dir is not None:  # the dead worker's lock file (no process holds it)
                remove_left_lock(lock_path(self.lock_dir, vid))
            return
        log.debug("--ray: %s back to the queue (%d tries so far)", vid, tries)
        self.queue.appendleft(vid)

    # -- deaths

    def _lost(self, sid: int, err: BaseException) -> None:
        slot = self.slots.pop(sid)
        self._kill(slot.actor)
        if slot.node is None:  # died before it was set up
            self.early_deaths += 1
            if "creation task" in str(err):  # the job's set-up raised: so it will everywhere
                raise InputError(f"--ray: the workers could not start: {ray_cause(err)}")
            if self.early_deaths <= 2 * self.workers + 2:  # a node going away, a busy machine
                self._spawn()
            elif not self.ever_ready:
                raise InputError(f"--ray: the workers could not start: {ray_cause(err)}")
            return  # else the pool goes on smaller (_check_stuck if it empties)
        node = self._lost_node(slot.node)
        if node is None:
            log.debug("--ray: a worker died on %s: %s", slot.vid, ray_cause(err))
            self._give_back(slot.vid)
            self._spawn()
            return
        # the whole node is gone: every actor of ours there with it, now, not one by one
        moved = [slot.vid] if slot.vid else []
        for other in [k for k, s in self.slots.items() if s.node == slot.node]:
            gone = self.slots.pop(other)
            self._kill(gone.actor)
            moved += [gone.vid] if gone.vid else []
        self.bar.write(f"tal: --ray: node {node} lost: {len(moved)} video"
                       f"{'' if len(moved) == 1 else 's'} moved", file=sys.stderr)
        self.report.lost_nodes.append(node)
        for vid in moved:
            self._give_back(vid)
        for _ in range(self.workers - len(self.slots)):
            self._spawn()

    def _lost_node(self, node_id: str) -> str | None:
        """The node's address if it is dead or its raylet no longer answers, else None."""
        for nd in self.ray.nodes():
            if nd["NodeID"] == node_id:
                address = nd.get("NodeManagerAddress", "?")
                if not nd["Alive"]:
                    return address
                port = nd.get("NodeManagerPort")
                return None if port is None or raylet_reachable(address, port) else address
        return "?"

    def _check_stuck(self) -> None:
        """No actor set up for ``start_timeout_s`` while videos wait: say why, stop waiting."""
        now = time.monotonic()
        if any(s.node is not None for s in self.slots.values()):
            self.since = now
            return
        if now - self.since < self.options.start_timeout_s:
            return
        placed = self.ray.get(self.tracker.placed_slots.remote())
        if placed & set(self.slots):  # a process exists and is building its worker: wait
            self.since = now
            return
        why = self._why_no_worker()
        if not self.ever_ready:
            raise InputError(f"--ray: no worker could start within "
                             f"{self.options.start_timeout_s:g} s: {why}")
        for vid in [*self.queue, *(v for _, v in self.later)]:
            self._fail(vid, f"no worker left to run it ({why})")
        self.queue.clear()
        self.later.clear()

    def _why_no_worker(self) -> str:
        free = self.ray.available_resources()
        nodes = [nd for nd in self.ray.nodes() if nd["Alive"]]
        largest = max((float(nd["Resources"].get("CPU", 0.0)) for nd in nodes), default=0.0)
        need = f"{self.cpus_each:g} CPU"
        if self.options.gpus_per_worker:
            need += f" and {self.options.gpus_per_worker:g} GPU"
        return (f"each worker needs {need} (--threads {self.options.threads}); the cluster has "
                f"{float(free.get('CPU', 0.0)):g} CPUs free on {len(nodes)} node"
                f"{'' if len(nodes) == 1 else 's'} (the largest has {largest:g})")

    def _kill(self, actor) -> None:
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception as err:  # noqa: BLE001 (already dead, or the cluster gone)
            log.debug("--ray: kill: %s", err)
