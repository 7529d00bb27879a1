"""Output safety: the one place that decides what ``tal`` may write where.

Every writer (results, subtitles, CSV/TSV, features, reports, plots, checkpoints) writes through
:func:`write_bytes`, which applies these rules (docs/hostile_inputs.md, "Output safety: the
rules"):

1. Names. A file named after a video id is ``file_in(folder, id, suffix)``: the id made safe by
   :func:`safe_name` (the rule ``tal detect`` gives ids from file names), refused past 255
   bytes, and proven to stay in ``folder`` (links followed).
2. Not a regular file. A symbolic link is written through to its final target, atomically beside
   the target; a broken link, a device, a FIFO or a socket is refused; ``-o -`` is refused.
3. An input of the run is never an output (:class:`Inputs`, by device and inode).
4. Same kind. An existing file is replaced only by one of its own kind, recognised by its
   content (:func:`sniff`): detections by detections, a report by a report, ...
5. Every write is a temp file beside the target, fsync, rename (``fsutil.atomic_write_bytes``).

CSV/TSV text cells a spreadsheet would run as a formula are neutralised here too
(:func:`neutralise_cell`, undone by :func:`restore_cell`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tal_pipeline.errors import InputError, UsageError
from tal_pipeline.fsutil import NAME_MAX, atomic_write_bytes

# ---------------------------------------------------------------- 1. names

UNSAFE = re.compile(r"[^A-Za-z0-9._+=@,-]")  # characters replaced by "_" in video ids


def safe_name(video_id: str) -> str:
    """``video_id`` as a file name: characters outside ``[A-Za-z0-9._+=@,-]`` become ``_``
    (``/``, NUL, any other Unicode), leading dots too (never ``.``, ``..`` or hidden), and an
    empty id is ``_``. Idempotent: the ids ``tal detect`` makes are unchanged."""
    safe = UNSAFE.sub("_", str(video_id))
    safe = re.sub(r"^\.+", lambda m: "_" * len(m.group()), safe)
    return safe or "_"


def file_in(folder: str | os.PathLike, video_id: str, suffix: str) -> Path:
    """``folder/<safe_name(id)><suffix>``, proven to stay in ``folder``: InputError if the name
    would pass the file system's 255 bytes, or a link there leads out of the folder."""
    name = safe_name(video_id) + suffix
    size = len(os.fsencode(name))
    if size > NAME_MAX:
        raise InputError(f"the output name {name[:24]}... (video id {str(video_id)[:24]!r}...) "
                         f"would be {size} bytes, over the {NAME_MAX}-byte limit of file names; "
                         "rename the file")
    path = Path(folder) / name
    prove_inside(folder, path)
    return path


def prove_inside(folder: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` if it is a plain name in ``folder`` and what a write to it reaches (links
    followed, as the write follows them) is inside ``folder``; InputError otherwise."""
    path = Path(path)
    name = path.name
    if path.parent != Path(folder) or name in ("", ".", "..") or os.sep in name or "\0" in name:
        raise InputError(f"{path}: not a file name inside {folder}")
    root = os.path.realpath(folder)
    real = os.path.realpath(path)
    if os.path.commonpath([root, real]) != root or real == root:
        raise InputError(f"{path}: a symbolic link that leads out of the output folder {folder} "
                         f"(to {real}); never followed: use another -o")
    return path


def id_names(ids: Iterable[str]) -> dict[str, str]:
    """Video id -> its safe file name stem; InputError listing every name two ids share (``a/b``
    and ``a_b``), before anything is written."""
    groups: dict[str, list[str]] = {}
    for vid in ids:
        groups.setdefault(safe_name(vid), []).append(vid)
    clashes = {k: v for k, v in groups.items() if len(v) > 1}
    if clashes:
        shown = "; ".join(f"{k}: {', '.join(map(repr, v))}" for k, v in sorted(clashes.items())[:5])
        raise InputError(f"{len(clashes)} file name(s) shared by several video ids once made safe "
                         f"(characters outside [A-Za-z0-9._+=@,-] become _): {shown}")
    return {vid: name for name, (vid,) in groups.items()}


# ---------------------------------------------------------------- 3. inputs


@dataclass(frozen=True)
class Inputs:
    """The files a run reads, by (device, inode), so that none is ever one of its outputs,
    whatever name or link reaches it."""

    files: Mapping[tuple[int, int], str] = field(default_factory=dict)  # (dev, inode) -> path

    @classmethod
    def of(cls, paths: Iterable[str | os.PathLike | None]) -> Inputs:
        """The files at ``paths`` (links followed; a folder: the files directly in it and in its
        ``.tal/``); paths that do not exist are left out."""
        found: dict[tuple[int, int], str] = {}
        for p in paths:
            if p is None:
                continue
            p = Path(p)
            entries = [p]
            if p.is_dir():
                entries = [q for d in (p, p / ".tal") if d.is_dir() for q in sorted(d.iterdir())]
            for q in entries:
                try:
                    st = os.stat(q)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    found.setdefault((st.st_dev, st.st_ino), str(q))
        return cls(found)

    def which(self, path: str | os.PathLike) -> str | None:
        """The input that ``path`` is (the same file), or None."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        return self.files.get((st.st_dev, st.st_ino))


NO_INPUTS = Inputs()

# ---------------------------------------------------------------- 4. kinds

# kind -> how messages name it. The first group is what tal writes; the rest is only recognised.
KINDS = {
    "results": "detections (a results file)",
    "vtt": "WebVTT subtitles",
    "srt": "SubRip subtitles",
    "table": "a table of detections (CSV/TSV)",
    "features": "a feature meta (tal extract)",
    "npy": "a NumPy array (.npy)",
    "report": "a tal report (HTML)",
    "plot": "a tal plot",
    "checkpoint": "a tal checkpoint",
    "annotations": "ground truth (annotations)",
    "other": "another kind of file",
}
MARKER = "tal-pipeline"  # written into the files that have no schema of their own to tell them
REPORT_MARK = f'<meta name="generator" content="{MARKER}">'  # in every report's <head>
PLOT_MARK = f"{MARKER} timeline"  # in every plot's metadata (PNG/SVG/PDF) or comment (JPEG)
_CHECKPOINT_MARK = f"{MARKER}/head".encode()  # the "format" of checkpoints and train states
_TABLE_HEADERS = ("video_id,label,start,end,score", "video_id\tlabel\tstart\tend\tscore")
_SRT_START = re.compile(r"\s*\d+[ \t]*\r?\n\d+:\d\d:\d\d,\d{3} --> ")
_CUT_RESULTS = re.compile(r'\{\s*"version":\s*"tal-pipeline/')  # what render_json writes first
_PICTURES = (b"\x89PNG", b"\xff\xd8\xff", b"%PDF", b"<?xml", b"<svg")
_PEEK = 1 << 16  # bytes read at the start (and end) of a file to recognise it


def sniff(path: str | os.PathLike) -> str:
    """What the file at ``path`` (links followed) is, by its content: a kind of :data:`KINDS`,
    or ``"missing"``, ``"empty"`` (0 bytes), ``"broken"`` (a broken link or a link loop),
    ``"folder"``, or ``"special"`` (a device, FIFO or socket; never opened)."""
    try:
        st = os.stat(path)
    except OSError as err:  # a missing file, a broken link, a link loop, a folder not searchable
        if os.path.islink(path) or err.errno == errno.ELOOP:
            return "broken"
        return "missing"  # the write says why (permission denied, ...)
    if stat.S_ISDIR(st.st_mode):
        return "folder"
    if not stat.S_ISREG(st.st_mode):
        return "special"
    if st.st_size == 0:
        return "empty"
    try:
        with open(path, "rb") as f:
            head = f.read(_PEEK)
            tail = b""
            if st.st_size > _PEEK:
                f.seek(max(_PEEK, st.st_size - _PEEK))
                tail = f.read()
    except OSError:
        return "other"
    return _kind_of(Path(path), head, tail)


def _kind_of(path: Path, head: bytes, tail: bytes) -> str:
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        return "checkpoint" if _is_checkpoint(path) else "other"
    if head.startswith(_PICTURES) and (PLOT_MARK.encode() in head or PLOT_MARK.encode() in tail):
        return "plot"
    text = head.decode("utf-8", "replace").lstrip("\ufeff")
    if text.startswith("WEBVTT"):
        return "vtt"
    if _SRT_START.match(text):
        return "srt"
    if (text.splitlines() or [""])[0].strip() in _TABLE_HEADERS:
        return "table"
    if text.lstrip().lower().startswith("<!doctype html") and REPORT_MARK in text:
        return "report"
    if text.lstrip().startswith("{"):
        return _json_kind(path, text)
    return "other"


def _json_kind(path: Path, head: str) -> str:
    from tal_pipeline.errors import loads_json

    if _CUT_RESULTS.match(head):  # tal's results, whole or cut short: no need to parse them
        return "results"
    try:
        obj = loads_json(path.read_bytes())
    except (OSError, ValueError):  # not complete JSON, and not ours
        return "other"
    if not isinstance(obj, Mapping):
        return "other"
    if str(obj.get("format", "")).startswith(f"{MARKER}/features") or {
        "num_features", "dim", "feature_stride"
    } <= set(obj):
        return "features"
    if isinstance(obj.get("results"), Mapping):
        return "results"
    return "annotations" if "database" in obj else "other"


def _is_checkpoint(path: Path) -> bool:
    """A torch.save zip whose pickled structure names our format (read, never unpickled)."""
    try:
        with zipfile.ZipFile(path) as z:
            pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            return bool(pkl) and _CHECKPOINT_MARK in z.read(pkl[0])
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError, EOFError):
        return False


def is_cut_short(path: str | os.PathLike) -> bool:
    """A results file cut short (it starts as ``tal``'s do but is not complete JSON): such a
    file is redone, never refused (anything else that does not parse is never replaced)."""
    from tal_pipeline.errors import loads_json

    try:
        data = Path(path).read_bytes()
        loads_json(data)
    except OSError:
        return False
    except ValueError:
        return bool(_CUT_RESULTS.match(data[:_PEEK].decode("utf-8", "replace")))
    return False


# ---------------------------------------------------------------- 2 + 3 + 4: may this be written


_SPECIAL = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _special_name(path) -> str:
    mode = os.stat(path).st_mode
    return next((name for test, name in _SPECIAL if test(mode)), "not a regular file")


def check_output_arg(arg: str) -> str:
    """``-o`` as given: UsageError (exit 2) for ``''`` (it would mean the current folder) and
    ``-`` (standard output: no verb writes there)."""
    if arg == "":
        raise UsageError("-o '': empty; name a file, or a folder with a trailing /")
    if arg == "-":
        raise UsageError("-o -: standard output is not an output of tal; name a file")
    return arg


def refusal(path: str | os.PathLike, kind: str, inputs: Inputs = NO_INPUTS) -> str | None:
    """Why ``path`` may not be written as ``kind`` (a key of :data:`KINDS`), or None: ``-o -``,
    an input of the run, a folder, a broken link, a device/FIFO/socket, or a file of another
    kind (recognised by content). Missing and empty files may be written."""
    if os.fspath(path) == "-":
        return "-: standard output is not an output of tal; name a file"
    name = inputs.which(path)
    if name is not None:
        return f"{path}: is an input of this run ({name}); an input is never an output"
    found = sniff(path)
    if found in ("missing", "empty", kind):
        return None
    if found == "folder":
        return f"{path}: is a folder; name a file"
    if found == "broken":
        return (f"{path}: broken symbolic link or link loop (target {os.path.realpath(path)} "
                "does not exist); never followed: use another -o")
    if found == "special":
        return f"{path}: not a regular file ({_special_name(path)}); never replaced: use another -o"
    return (f"{path}: holds {KINDS[found]}, not {KINDS[kind]}; tal never replaces a file of "
            "another kind: use another -o")


def check_target(path: str | os.PathLike, kind: str, inputs: Inputs = NO_INPUTS) -> Path:
    """``path`` if it may be written as ``kind`` (:func:`refusal`); else UsageError for ``-o -``,
    InputError (one line) for the rest."""
    why = refusal(path, kind, inputs)
    if why is not None:
        raise (UsageError if os.fspath(path) == "-" else InputError)(why)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes, kind: str, inputs: Inputs = NO_INPUTS) -> Path:
    """The one way out: ``data`` to ``path`` as ``kind`` after :func:`check_target`, atomically
    (temp + fsync + rename; a link written through to its target). Returns ``path``."""
    check_target(path, kind, inputs)
    atomic_write_bytes(path, data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, kind: str, inputs: Inputs = NO_INPUTS) -> Path:
    return write_bytes(path, text.encode("utf-8"), kind, inputs)


def write_json(path: str | os.PathLike, obj, kind: str, inputs: Inputs = NO_INPUTS) -> Path:
    return write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n", kind, inputs)


# ---------------------------------------------------------------- CSV/TSV cells

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # OWASP: a spreadsheet runs these as formulas


def neutralise_cell(text: str) -> str:
    """A CSV/TSV text cell (a label, a video id) a spreadsheet shows as text: one ``'`` before a
    cell that starts (after any ``'``) with ``= + - @``, tab or CR (OWASP's CSV injection rule).
    :func:`restore_cell` undoes it exactly. Numbers are never passed here."""
    return "'" + text if text.lstrip("'")[:1] in FORMULA_STARTS else text


def restore_cell(text: str) -> str:
    """The cell :func:`neutralise_cell` was given (its ``'`` removed)."""
    return text[1:] if text[:1] == "'" and text.lstrip("'")[:1] in FORMULA_STARTS else text
