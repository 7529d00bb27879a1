"""What a batch is made of: the inputs of ``tal extract`` and ``tal detect``, their video ids
and the shard of this process.

1. ``collect_inputs``: files, folders (their videos, recursively, sorted, links followed) and
   ``.txt`` list files (one path per line) -> an ordered list of video paths. A missing input
   named on the command line is an error before any work starts; one named in a list is a
   problem (named, a failure of the batch, which goes on). In a folder, a broken link, a link
   loop or a FIFO with a video suffix is taken, to fail by name; folder link loops, folders that
   cannot be listed and lists that name themselves are problems (``problems=``).
2. ``check_unique_ids``: ``video_id`` is the file stem, sanitised so it can never leave the
   output folder; two inputs with the same id are refused, all collisions listed.
3. ``select_shard``: ``--shard i/n`` keeps every n-th id (sorted), starting at the i-th.

``select_inputs`` is the three for a verb. Running the batch is ``batch``'s.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from tal_pipeline.errors import InputError
from tal_pipeline.safety import safe_name

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset(  # what a folder contributes (any file named directly is tried)
    [".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts",
     ".ogv"]
)
LIST_EXTENSION = ".txt"  # an input with this suffix is a list of paths, one per line
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
    return safe_name(Path(path).stem)


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
