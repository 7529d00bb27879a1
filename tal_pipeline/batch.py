"""Batch runs over many videos, shared by ``tal extract`` and ``tal detect``.

1. ``collect_inputs``: files, folders (their videos, recursively, sorted, links followed) and
   ``.txt`` list files (one path per line) -> an ordered list of video paths. A missing input
   named on the command line is an error before any work starts; one named in a list is a
   problem (named, a failure of the batch, which goes on). In a folder, a broken link, a link
   loop or a FIFO with a video suffix is taken, to fail by name; folder link loops, folders that
   cannot be listed and lists that name themselves are problems (``problems=``).
2. ``check_unique_ids``: ``video_id`` is the file stem, sanitised so it can never leave the
   output folder; two inputs with the same id are refused, all collisions listed.
3. ``select_shard``: ``--shard i/n`` keeps every n-th id (sorted), starting at the i-th.
4. ``run_batch``: a progress bar; skip what ``is_done`` says is complete (resume); one failure is
   one line ``tal: <file>: <cause>`` and the batch goes on; Ctrl-C stops at once. Videos another
   process holds are waited for at the end (``busy_wait``), then done or skipped like the others.
5. ``write_failures``: the failure list, beside the outputs.

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
meanwhile is skipped. The kernel drops a dead
process's lock, so no lock is ever stale; the file is removed on release. A video's leftover
``.part`` temps are removed only under its lock, never another live process's.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import stat
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tal_pipeline.errors import InputError, TalError, VideoDecodeError
from tal_pipeline.locks import FileLock, hold_lock, lock_path, remove_left_lock, try_lock

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(  # what a folder contributes (any file named directly is tried)
    [".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts",
     ".ogv"]
)
LIST_EXTENSION = ".txt"  # an input with this suffix is a list of paths, one per line
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@,-]")  # characters replaced by "_" in video ids


def collect_inputs(
    inputs: Iterable[str | os.PathLike],
    extensions=VIDEO_EXTENSIONS,
    problems: list[tuple[Path, str]] | None = None,
) -> list[Path]:
    """Expand ``inputs`` into video paths, in the order given (folders sorted, recursive).

    A file is taken as is (whatever its extension); a folder contributes its entries whose
    suffix is in ``extensions`` (case-insensitive); a ``.txt`` file lists paths (files or
    folders or other lists), one per line, relative to the list's folder, UTF-8 with or without
    a byte-order mark; blank lines and ``#`` comments are skipped. The same file named twice is
    kept once. A list entry that does not exist, and a list already being read (a loop), is a
    problem; the other entries are taken.

    Folders are walked following symbolic links. Every entry with a video suffix that is not a
    folder is taken, even a broken link, a link loop, a FIFO or an unreadable file: it then
    fails by name with its cause (``decode`` refuses it before opening it). A link to a folder
    already being walked (a loop) is not entered; a folder reached twice through links is
    walked once. A subfolder that cannot be listed, and a folder link loop, is a *problem*:
    appended to ``problems`` as ``(path, cause)`` when a list is given, else logged as a warning.

    Raises InputError for a missing input named here (a broken link or a link loop included),
    an input folder that cannot be listed, or an unreadable list file.
    """
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = _identity(p)
        if key not in seen:
            seen.add(key)
            out.append(p)

    def problem(p: Path, cause: str) -> None:
        if problems is None:
            log.warning("%s: %s", p, cause)
        else:
            problems.append((p, cause))

    reading: list[Path] = []  # the list files being read, outermost first (loop detection)

    def expand(p: Path, listed_in: Path | None) -> None:
        where = f" (listed in {listed_in})" if listed_in else ""
        try:
            st = p.stat()
        except OSError as err:
            if listed_in is None:
                raise InputError(f"{p}: {_access_problem(p, err)}") from None
            problem(p, _access_problem(p, err) + where)  # named, and the others go on
            return
        if stat.S_ISDIR(st.st_mode):
            _walk_folder(p, (st.st_dev, st.st_ino), extensions, add, problem, where)
        elif stat.S_ISREG(st.st_mode) and p.suffix.lower() == LIST_EXTENSION:
            key = _identity(p)
            if key in reading:
                problem(p, f"list file already being read (a list that names itself){where}; not read again")
                return
            reading.append(key)
            try:
                for q in _read_list(p):
                    expand(q, p)
            finally:
                reading.pop()
        else:
            add(p)  # a file; or a FIFO, a device: refused by name when processed, never opened

    for item in inputs:
        expand(Path(item), None)
    return out


def _identity(p: Path) -> Path:
    """What makes two inputs the same file: the resolved path; a path that does not resolve
    (a broken link, a link loop) is its own identity."""
    try:
        return p.resolve(strict=True)
    except (OSError, RuntimeError):  # RuntimeError: a link loop, Python < 3.13
        return Path(os.path.abspath(p))


def _access_problem(p: Path, err: OSError) -> str:
    """Why the input ``p`` (a file or a folder) cannot be used, from its ``stat`` error."""
    from tal_pipeline.fsutil import access_problem

    return access_problem(p, err, "no such file or folder", reach="a file or folder")


def _walk_folder(
    root: Path,
    root_key: tuple[int, int],
    extensions,
    add: Callable[[Path], None],
    problem: Callable[[Path, str], None],
    where: str,
) -> None:
    """Depth first, entries sorted by name (so the order is that of the relative paths'
    parts); folder links followed, loops detected by the folders' real (st_dev, st_ino)."""
    visited = {root_key}

    def walk(folder: Path, chain: dict[tuple[int, int], Path]) -> None:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            cause = "cannot list the folder: " + (
                "permission denied" if err.errno == errno.EACCES else str(err.strerror or err)
            )
            if folder == root:
                raise InputError(f"{folder}: {cause}{where}") from None
            problem(folder, cause)
            return
        for entry in entries:
            path = folder / entry.name
            try:
                is_dir = entry.is_dir()  # follows links; False for a broken one
            except OSError:  # a link loop, an unsearchable folder on the way: not a folder
                is_dir = False
            if not is_dir:
                if os.path.splitext(entry.name)[1].lower() in extensions:
                    add(path)
                continue
            try:
                st = entry.stat()
            except OSError as err:
                problem(path, _access_problem(path, err))
                continue
            key = (st.st_dev, st.st_ino)
            if key in chain:
                problem(path, f"symbolic link loop (leads back to the folder {chain[key]}); not entered")
            elif key not in visited:  # else: the same folder through another link, walked once
                visited.add(key)
                walk(path, {**chain, key: path})

    walk(root, {root_key: root})


def _read_list(path: Path) -> list[Path]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # an editor's byte-order mark is not a path
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the list file ({err})") from None
    return list_entries(text, path.parent)


def list_entries(text: str, folder: Path) -> list[Path]:
    """The paths a list file's ``text`` names: one per line, blank lines and ``#`` comments
    skipped, relative paths taken from ``folder`` (the list's own)."""
    paths = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        paths.append(p if p.is_absolute() else folder / p)
    return paths


def video_id(path: str | os.PathLike) -> str:
    """The file name without extension, made safe as a file name in the output folder.

    Characters outside ``[A-Za-z0-9._+=@,-]`` become ``_``; leading dots are replaced so the
    id is never ``.``, ``..`` or hidden; an empty stem becomes ``_``.
    """
    stem = Path(path).stem
    safe = _UNSAFE.sub("_", stem)
    safe = re.sub(r"^\.+", lambda m: "_" * len(m.group()), safe)
    return safe or "_"


def check_unique_ids(paths: Iterable[Path]) -> dict[str, Path]:
    """``{video_id: path}`` in input order; InputError listing every id shared by 2+ paths."""
    groups: dict[str, list[Path]] = {}
    for p in paths:
        groups.setdefault(video_id(p), []).append(Path(p))
    clashes = {k: v for k, v in groups.items() if len(v) > 1}
    if clashes:
        lines = [f"{k}: {', '.join(str(p) for p in v)}" for k, v in sorted(clashes.items())]
        raise InputError(
            f"{len(clashes)} video id(s) used by more than one input (ids are file names without "
            f"extension; rename or split the run): " + "; ".join(lines)
        )
    return {k: v[0] for k, v in groups.items()}


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; UsageError (exit status 2) otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    if not m or not (0 <= int(m.group(1)) < int(m.group(2))):
        from tal_pipeline.errors import UsageError

        raise UsageError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4), got {spec!r}")
    return int(m.group(1)), int(m.group(2))


def select_shard(items: Mapping[str, Path], spec: str | None) -> dict[str, Path]:
    """The shard ``spec`` ("i/n") of ``{id: path}``: sorted ids ``i, i+n, i+2n, ...``.

    Every id lands in exactly one of the n shards, whatever the order of the inputs.
    """
    if spec is None:
        return dict(items)
    i, n = parse_shard(spec)
    keys = sorted(items)[i::n]
    return {k: items[k] for k in keys}


def select_inputs(
    inputs: Iterable[str | os.PathLike],
    shard: str | None = None,
    extensions=VIDEO_EXTENSIONS,
    what: str = "videos",
    problems: list[tuple[Path, str]] | None = None,
) -> dict[str, Path]:
    """Steps 1-3 for a verb: ``{video_id: path}`` of this shard, or InputError (bad ``--shard``,
    a missing input, duplicate ids, or nothing to do: ``no inputs found (<what>)``); NothingToDo
    (exit status 0) when the inputs exist but this shard has none (more shards than inputs).

    ``problems``: filled with the folders ``collect_inputs`` could not walk (``(path, cause)``;
    logged as warnings when None); when nothing was found they are named in the error."""
    inputs = list(inputs)
    if shard is not None:
        parse_shard(shard)
    found: list[tuple[Path, str]] = [] if problems is None else problems
    start = len(found)
    every = check_unique_ids(collect_inputs(inputs, extensions, found))
    items = select_shard(every, shard)
    if problems is None:
        for path, cause in found:
            log.warning("%s: %s", path, cause)
    if every and not items:  # more shards than inputs (a job array): this one has none
        from tal_pipeline.errors import NothingToDo

        i, n = parse_shard(shard)
        raise NothingToDo(f"shard {i}/{n} is empty: {len(every)} input{'s' if len(every) != 1 else ''} "
                          f"in all, for shards 0-{len(every) - 1}; nothing to do")
    if not items:
        new = found[start:]
        detail = "".join(f"; {p}: {c}" for p, c in new[:3]) + ("; ..." if len(new) > 3 else "")
        named = ", ".join(str(i) for i in inputs)
        raise InputError(f"no inputs found ({what}) in {named}{detail}")
    return items


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

    ``problems``: what :func:`select_inputs` could not walk (a folder link loop, an unreadable
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
