"""Batch runs over many videos, shared by ``tal extract`` and ``tal detect``.

1. ``collect_inputs``: files, folders (their videos, recursively, sorted) and ``.txt`` list
   files (one path per line) -> an ordered list of video paths. Missing inputs are an error
   before any work starts.
2. ``check_unique_ids``: ``video_id`` is the file stem, sanitised so it can never leave the
   output folder; two inputs with the same id are refused, all collisions listed.
3. ``select_shard``: ``--shard i/n`` keeps every n-th id (sorted), starting at the i-th.
4. ``run_batch``: a progress bar; skip what ``is_done`` says is complete (resume); one failure is
   one line ``tal: <file>: <cause>`` and the batch goes on; Ctrl-C stops at once.
5. ``write_failures``: the failure list, beside the outputs.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tal_pipeline.errors import InputError, TalError, VideoDecodeError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(
    [".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts"]
)
LIST_EXTENSION = ".txt"  # an input with this suffix is a list of paths, one per line
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@,-]")  # characters replaced by "_" in video ids


def collect_inputs(inputs: Iterable[str | os.PathLike], extensions=VIDEO_EXTENSIONS) -> list[Path]:
    """Expand ``inputs`` into video paths, in the order given (folders sorted, recursive).

    A file is taken as is (whatever its extension); a folder contributes its files whose
    suffix is in ``extensions`` (case-insensitive); a ``.txt`` file lists paths (files or
    folders), one per line, relative to the list's folder; blank lines and ``#`` comments are
    skipped. The same file named twice is kept once. Raises InputError for a missing input.
    """
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    def expand(p: Path, listed_in: Path | None) -> None:
        where = f" (listed in {listed_in})" if listed_in else ""
        if p.is_dir():
            found = sorted(
                (q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in extensions),
                key=lambda q: q.relative_to(p).parts,
            )
            for q in found:
                add(q)
        elif p.is_file():
            if p.suffix.lower() == LIST_EXTENSION and listed_in is None:
                for q in _read_list(p):
                    expand(q, p)
            else:
                add(p)
        else:
            raise InputError(f"{p}: no such file or folder{where}")

    for item in inputs:
        expand(Path(item), None)
    return out


def _read_list(path: Path) -> list[Path]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read the list file ({err})") from None
    paths = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line).expanduser()
        paths.append(p if p.is_absolute() else path.parent / p)
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
    """``"i/n"`` -> (i, n) with 0 <= i < n; InputError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    if not m or not (0 <= int(m.group(1)) < int(m.group(2))):
        raise InputError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4), got {spec!r}")
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
) -> dict[str, Path]:
    """Steps 1-3 for a verb: ``{video_id: path}`` of this shard, or InputError (bad ``--shard``,
    a missing input, duplicate ids, or nothing to do: ``no inputs found (<what>)``)."""
    if shard is not None:
        parse_shard(shard)
    items = select_shard(check_unique_ids(collect_inputs(inputs, extensions)), shard)
    if not items:
        raise InputError(f"no inputs found ({what})")
    return items


@dataclass
class BatchReport:
    done: list[str] = field(default_factory=list)  # ids processed now
    skipped: list[str] = field(default_factory=list)  # ids already complete (resume)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, cause)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        return f"{len(self.done)} done, {len(self.skipped)} skipped, {len(self.failed)} failed"


def failure_cause(err: BaseException) -> str:
    """One-line cause: the decoder's cause, a TalError's message, or ``Type: message``."""
    if isinstance(err, VideoDecodeError):
        text = err.cause
    elif isinstance(err, TalError):
        text = str(err)
    else:
        text = f"{type(err).__name__}: {err}"
    return " ".join(text.split()) or type(err).__name__


def run_batch(
    items: Mapping[str, Path],
    process_fn: Callable[[str, Path], object],
    is_done_fn: Callable[[str, Path], bool] | None = None,
    desc: str = "videos",
    progress: bool | None = None,
) -> BatchReport:
    """Run ``process_fn(id, path)`` for each item not ``is_done_fn(id, path)``.

    Exceptions (TalError or other) fail that item only: one line ``tal: <path>: <cause>`` on
    stderr (the traceback at DEBUG level, i.e. with ``tal -v``). KeyboardInterrupt propagates at
    once. ``progress``: tqdm bar on stderr (None: only on a terminal).
    """
    from tqdm import tqdm

    report = BatchReport()
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    with tqdm(total=len(items), desc=desc, unit="video", file=sys.stderr, disable=disable) as bar:
        for vid, path in items.items():
            bar.set_postfix_str(vid, refresh=False)
            try:
                if is_done_fn is not None and is_done_fn(vid, path):
                    report.skipped.append(vid)
                else:
                    process_fn(vid, path)
                    report.done.append(vid)
            except Exception as err:  # one bad video never stops the batch
                cause = failure_cause(err)
                log.debug("%s failed", path, exc_info=True)
                tqdm.write(f"tal: {path}: {cause}", file=sys.stderr)
                report.failed.append((str(path), cause))
            bar.update(1)
    return report


def write_failures(out_dir: str | os.PathLike, report: BatchReport, name: str = "failures.txt") -> Path | None:
    """Write ``OUT/<name>`` (``path<TAB>cause`` lines) if anything failed, else remove a stale
    one; returns the path written, or None."""
    from tal_pipeline.fsutil import atomic_write_text

    path = Path(out_dir) / name
    if report.failed:
        text = "".join(f"{p}\t{c}\n" for p, c in report.failed)
        return atomic_write_text(path, text)
    if path.exists():
        path.unlink()
    return None
