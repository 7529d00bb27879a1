"""Running a batch over many videos, shared by ``tal extract`` and ``tal detect`` (what the batch
is made of, its inputs, ids and shards: ``inputs``).

1. ``run_batch``: a progress bar; skip what ``is_done`` says is complete (resume); one failure is
   one line ``tal: <file>: <cause>`` and the batch goes on; Ctrl-C stops at once. Videos another
   process holds are waited for at the end (``busy_wait``), then done or skipped like the others.
2. ``write_failures``: the failure list, beside the outputs; ``exit_if_failed``: the closing
   list and the exit status.

Before any work: ``check_device``, ``check_output_folder``; resume compares what made an output
(``provenance_changes``, ``check_provenance``).

``run_item`` is one item's step (lock, resume check, stale temps, the per-video function); the
local loop (``run_batch``) and the Ray workers (``ray_engine``) both run it. Locks: ``locks``.

Interruption and concurrency: outputs are written atomically (``fsutil``) and the last one is
the completion marker, so a run killed at any point (even by SIGKILL) leaves only complete
outputs, and the rerun skips them. With ``run_batch(lock_dir=...)`` each video is worked on
under an exclusive ``flock`` on ``LOCKDIR/.<video_id>.lock``: several processes may run on the
same output folder; a video another process holds is *busy*: left to it while the others are
done, then waited for at the end, up to ``busy_wait`` seconds, with a note on stderr: once its
lock is free it is skipped if the other process finished it with the same settings, else done
here (its output from other settings is refused as on any resume). Exit status 0 means every
input is done with this run's settings, so a video still busy after the wait is *not done*: it is
listed at the end and the exit status is 1 (``exit_if_failed``). A video that became complete
meanwhile is skipped. The kernel drops a dead process's lock, so no lock is ever stale; the file
is removed on release. A video's leftover ``.part`` temps are removed only under its lock, never
another live process's.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tal_pipeline.errors import InputError, TalError, VideoDecodeError
from tal_pipeline.inputs import parse_shard
from tal_pipeline.locks import FileLock, hold_lock, lock_path, remove_left_lock, try_lock

log = logging.getLogger(__name__)


def check_device(device: str) -> None:
    """``--device``: UsageError (exit 2) for a name torch does not know or that is not a CPU or
    CUDA device, NotAvailableError (exit 1) for CUDA on a machine without it; before any work."""
    import torch

    from tal_pipeline.errors import NotAvailableError, UsageError

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise UsageError(f"--device {device!r}: not a device this tool runs on; use cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise NotAvailableError(f"--device {device}: CUDA is not available on this machine; use --device cpu")


def check_output_folder(folder: str | os.PathLike) -> None:
    """InputError, one line, if files cannot be made in ``folder``: before any work."""
    from tal_pipeline.fsutil import writable_problem

    why = writable_problem(folder)
    if why is not None:
        raise InputError(f"cannot write the output {folder}: {why}")


# ---------------------------------------------------------------------------------------------
# Provenance: what made an output. Each verb builds one dict of plain JSON values (checksums,
# options); it is written with the output, and resume skips an output only if its dict equals
# the current one. The comparison knows no keys, so a verb can add one without touching it.


def provenance_changes(ours: Mapping, theirs) -> list[str]:
    """What differs between the current provenance and an output's: ``["key: old -> new", ...]``
    (a key missing on one side differs); ``[]`` when equal."""
    if not isinstance(theirs, Mapping):
        return ["it has no record of its settings (an older version made it)"]
    a, b = _flat(_plain(dict(ours))), _flat(_plain(dict(theirs)))
    return [f"{k}: {_short(b.get(k))} -> {_short(a.get(k))}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k)]


def check_provenance(path: str | os.PathLike, ours: Mapping, theirs) -> None:
    """StaleOutputError (one line naming ``--overwrite``) if the output at ``path`` was made with
    other settings than ``ours``."""
    from tal_pipeline.errors import StaleOutputError

    changes = provenance_changes(ours, theirs)
    if changes:
        more = f"; and {len(changes) - 2} more" if len(changes) > 2 else ""
        raise StaleOutputError(
            f"{path} was made with other settings ({'; '.join(changes[:2])}{more}); pass "
            "--overwrite to redo it, or use another -o"
        )


def _plain(value):
    import json

    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flat(d: dict, prefix: str = "") -> dict:
    """Nested dicts as dotted keys, so a change names the option: ``postprocess.min_score``."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(value, limit: int = 24) -> str:
    import json

    text = "(none)" if value is None else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class BatchReport:
    done: list[str] = field(default_factory=list)  # ids processed now
    skipped: list[str] = field(default_factory=list)  # ids already complete (resume)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, cause)
    busy: list[str] = field(default_factory=list)  # ids another process was working on (locked)
    paths: dict[str, str] = field(default_factory=dict, repr=False)  # id -> input path, all seen

    @property
    def ok(self) -> bool:
        """Every input done with this run's settings: none failed, none left busy elsewhere."""
        return not self.failed and not self.busy

    def summary(self) -> str:
        text = f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed"
        if self.busy:
            text += f", {len(self.busy)} busy (another process is still on them: not done)"
        return text


def failure_cause(err: BaseException, path: str | os.PathLike | None = None) -> str:
    """One-line cause: the decoder's cause, a TalError's message, or ``Type: message``; a
    leading ``<path>: `` is dropped (the batch line names the file already)."""
    if isinstance(err, VideoDecodeError):
        text = err.cause
    elif isinstance(err, TalError):
        text = str(err)
    elif isinstance(err, OSError):  # an output that cannot be written: a full disk, ...
        from tal_pipeline.fsutil import os_error_text

        text = "cannot write " + os_error_text(err) if err.filename else os_error_text(err)
    else:
        text = f"{type(err).__name__}: {err}"
    text = " ".join(text.split())
    if path is not None and text.startswith(f"{path}: "):
        text = text[len(f"{path}: "):]
    return text or type(err).__name__


def run_batch(
    items: Mapping[str, Path],
    process_fn: Callable[[str, Path], object],
    is_done_fn: Callable[[str, Path], bool] | None = None,
    desc: str = "videos",
    progress: bool | None = None,
    lock_dir: str | os.PathLike | None = None,
    outputs_fn: Callable[[str], Iterable[Path]] | None = None,
    problems: Iterable[tuple[Path, str]] = (),
    busy_wait: float = 0.0,
) -> BatchReport:
    """Run ``process_fn(id, path)`` for each item not ``is_done_fn(id, path)``.

    ``problems``: what :func:`~tal_pipeline.inputs.select_inputs` could not walk (a folder link loop, an unreadable
    folder): each is one ``tal: <path>: <cause>`` line first and a failure of this batch.

    Exceptions (TalError or other) fail that item only: one line ``tal: <path>: <cause>`` on
    stderr (the traceback at DEBUG level, i.e. with ``tal -v``). KeyboardInterrupt propagates at
    once. ``progress``: tqdm bar on stderr (None: only on a terminal).

    ``lock_dir``: work on each item under its lock ``lock_dir/.<id>.lock`` (module docstring):
    an item locked elsewhere is busy: it is tried again after all the others, every
    ``BUSY_POLL_S`` for up to ``busy_wait`` seconds (:func:`wait_for_busy`); ``is_done_fn`` is
    asked again once locked. Items still busy then stay in ``report.busy`` (not done).
    ``outputs_fn(id)``: the files ``process_fn`` writes; their stale ``.part`` temps are removed
    (under the lock) before it runs.
    """
    from tqdm import tqdm

    report = BatchReport()
    for where, cause in problems:
        print(f"tal: {where}: {cause}", file=sys.stderr)
        report.failed.append((str(where), cause))
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    with tqdm(total=len(items), desc=desc, unit="video", file=sys.stderr, disable=disable) as bar:
        def attempt(vid: str, path: Path) -> str:
            """One try of one item: its outcome recorded (and the bar moved) unless busy."""
            bar.set_postfix_str(vid, refresh=False)
            try:
                outcome = run_item(vid, path, process_fn, is_done_fn, lock_dir, outputs_fn)
            except Exception as err:  # one bad video never stops the batch
                cause = failure_cause(err, path)
                log.debug("%s failed", path, exc_info=True)
                tqdm.write(f"tal: {path}: {cause}", file=sys.stderr)
                report.failed.append((str(path), cause))
                outcome = "failed"
            else:
                if outcome != "busy":
                    getattr(report, outcome).append(vid)
            if outcome != "busy":
                bar.update(1)
            return outcome

        busy = {}
        for vid, path in items.items():
            report.paths[vid] = str(path)
            if attempt(vid, path) == "busy":
                busy[vid] = path  # another process is on it: the others first, then wait
        report.busy = wait_for_busy(busy, attempt, busy_wait, desc)
        bar.update(len(report.busy))
    return report


BUSY_POLL_S = 1.0  # how often a busy video's lock is tried again while waiting
BUSY_NOTE_S = 60.0  # how often the wait says so on stderr


def wait_for_busy(busy: Mapping[str, Path], attempt: Callable[[str, Path], str], wait_s: float,
                  desc: str = "tal") -> list[str]:
    """Try the ``busy`` items again (``attempt(vid, path)`` -> its outcome) until none is busy
    or ``wait_s`` seconds have passed, with a note on stderr now and every ``BUSY_NOTE_S``;
    returns the ids still busy (in order)."""
    pending = dict(busy)
    if not pending or wait_s <= 0:
        return list(pending)
    from tqdm import tqdm

    start = time.monotonic()
    note_at = start
    while True:
        now = time.monotonic()
        if now >= note_at:
            names = ", ".join(list(pending)[:3]) + (", ..." if len(pending) > 3 else "")
            left = max(0, math.ceil(start + wait_s - now))
            tqdm.write(f"{desc}: waiting for {len(pending)} video{'s' if len(pending) != 1 else ''} "
                       f"another process is on ({names}); at most {left} s more (--busy-wait)",
                       file=sys.stderr)
            note_at = now + BUSY_NOTE_S
        for vid in list(pending):
            if attempt(vid, pending[vid]) != "busy":
                del pending[vid]
        if not pending or time.monotonic() - start >= wait_s:
            return list(pending)
        time.sleep(min(BUSY_POLL_S, max(0.0, start + wait_s - time.monotonic())))


def failures_name(shard: str | None = None) -> str:
    """``failures.txt``, or ``failures-<i>of<n>.txt`` for ``--shard i/n`` (shards writing into
    one output keep their own lists)."""
    return "failures.txt" if shard is None else "failures-{}of{}.txt".format(*parse_shard(shard))


def exit_if_failed(verb: str, report: BatchReport, failures: Path | None) -> None:
    """The closing list of a verb's failures, and of the videos left busy (another process was
    still on them: not done by this run), on stderr and exit status 1, if any (``failures``:
    the failure list written, None if it could not be)."""
    if report.ok:
        return
    if report.failed:
        where = f", listed in {failures}" if failures is not None else ""
        print(f"tal {verb}: {len(report.failed)} failed{where}:", file=sys.stderr)
        for path, cause in report.failed:
            print(f"  {path}: {cause}", file=sys.stderr)
    if report.busy:
        print(f"tal {verb}: {len(report.busy)} not done: another process was still on "
              f"{'them' if len(report.busy) > 1 else 'it'} (run again once it ends, or pass a "
              "longer --busy-wait):", file=sys.stderr)
        for vid in report.busy:
            print(f"  {report.paths.get(vid, vid)}", file=sys.stderr)
    sys.exit(1)


def write_failures(
    out_dir: str | os.PathLike, report: BatchReport, name: str = "failures.txt", required: bool = False
) -> Path | None:
    """Write ``OUT/<name>`` (``path<TAB>cause`` lines) if anything failed, else remove a stale
    one; returns the path written, or None. A file system error (a full disk) is one line on
    stderr and None, unless ``required``: the failures are listed on stderr anyway.

    Under a lock, so concurrent runs do not lose each other's lines: the lines already there for
    videos this run found busy are kept (the process on them may have written them).
    """
    path = Path(out_dir) / name
    if not report.failed and not path.exists():
        return None  # nothing to write or remove (and no lock file in a read-only folder)
    try:
        return _write_failures(path, report)
    except OSError as err:
        if required:
            raise
        from tal_pipeline.fsutil import os_error_text

        print(f"tal: cannot write the failure list: {os_error_text(err)}", file=sys.stderr)
    return None


def _write_failures(path: Path, report: BatchReport) -> Path | None:
    from tal_pipeline.fsutil import atomic_write_text, remove_stale_temps

    name = path.name
    with hold_lock(path.with_name(f".{name}.lock")):
        remove_stale_temps(path.parent, [name])
        lines = list(report.failed)
        busy = {report.paths[v] for v in report.busy if v in report.paths}
        if busy and path.is_file():
            ours = {p for p, _ in lines}
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                p, _, cause = line.partition("\t")
                if p in busy and p not in ours:
                    lines.append((p, cause))
        if lines:
            return atomic_write_text(path, "".join(f"{p}\t{c}\n" for p, c in lines))
        path.unlink(missing_ok=True)
    return None


def run_item(
    vid: str,
    path: Path,
    process_fn: Callable[[str, Path], object],
    is_done_fn: Callable[[str, Path], bool] | None,
    lock_dir: str | os.PathLike | None,
    outputs_fn: Callable[[str], Iterable[Path]] | None,
) -> str:
    """One item of ``run_batch``: ``"done"``, ``"skipped"`` or ``"busy"``; errors propagate."""

    def complete() -> bool:
        return is_done_fn is not None and bool(is_done_fn(vid, path))

    if outputs_fn is not None:
        _check_names_fit(outputs_fn(vid))

    if complete():  # the cheap path for finished videos: no lock taken
        if lock_dir is not None:
            remove_left_lock(lock_path(lock_dir, vid))
        return "skipped"
    lock = FileLock(Path(), None) if lock_dir is None else try_lock(lock_path(lock_dir, vid))
    if lock is None:
        log.debug("%s: busy (locked by another process)", path)
        return "busy"
    try:
        with lock:
            if lock_dir is not None and complete():  # finished by another process meanwhile
                return "skipped"
            if outputs_fn is not None:
                _remove_temps_of(outputs_fn(vid))
            process_fn(vid, path)
    except BaseException:
        # a Ctrl-C can land inside the lock's release, after the fd is dropped but before the
        # unlink: remove the file now if no one holds it (idempotent, safe against other runs)
        if lock_dir is not None:
            lock.release()  # finishes a release the interrupt cut short (idempotent)
            remove_left_lock(lock_path(lock_dir, vid))
        raise
    return "done"


def _check_names_fit(outputs: Iterable[Path]) -> None:
    """InputError, before any work, for an output whose name the file system cannot hold."""
    from tal_pipeline.fsutil import NAME_MAX

    for out in outputs:
        size = len(os.fsencode(Path(out).name))
        if size > NAME_MAX:
            raise InputError(
                f"the output name {Path(out).name[:24]}... would be {size} bytes, over the "
                f"{NAME_MAX}-byte limit of file names; rename the file"
            )


def _remove_temps_of(outputs: Iterable[Path]) -> None:
    """Remove the stale ``.part`` temps of these output files (whose lock the caller holds)."""
    from tal_pipeline.fsutil import remove_stale_temps

    by_folder: dict[Path, list[str]] = {}
    for out in outputs:
        by_folder.setdefault(Path(out).parent, []).append(Path(out).name)
    for folder, names in by_folder.items():
        n = remove_stale_temps(folder, names)
        if n:
            log.debug("removed %d stale temp file(s) of %s", n, ", ".join(names))

