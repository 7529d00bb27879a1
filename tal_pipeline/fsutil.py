"""Atomic file writes: a temp file in the destination folder, fsync, then ``os.replace``.

A reader (or a resumed run) therefore sees either the old file, or no file, or the complete new
one, never a partial write, even if the process is killed mid-write. A symbolic link is written
through to its target; a device, FIFO or socket is never replaced (:func:`write_target`). What
may be written where (names, kinds, inputs) is ``safety``'s, which every writer goes through.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def access_problem(path: str | os.PathLike, err: OSError, missing: str, reach: str = "a file") -> str:
    """Why ``path`` cannot be used, from the ``OSError`` its ``stat`` raised: a broken symbolic
    link (and its target), a link loop (the links never reach ``reach``), a folder on the path
    that cannot be searched, or ``missing`` (e.g. "file not found")."""
    name = os.fspath(path)
    if err.errno == errno.ENOENT and os.path.islink(name):
        target = os.path.realpath(name)  # as far as the chain of links resolves
        return f"broken symbolic link (target {target} does not exist)"
    if err.errno == errno.ENOENT:
        return missing
    if err.errno == errno.ENOTDIR:
        return f"{missing} (a part of the path is not a folder)"
    if err.errno == errno.ELOOP:
        return f"symbolic link loop (the links never reach {reach})"
    if err.errno == errno.EACCES:
        return "permission denied (a folder on the path cannot be searched)"
    return f"cannot access ({err.strerror or err})"


def os_error_text(err: OSError) -> str:
    """An OSError as one line for users: ``<file>: <cause>`` (``no space left on device``),
    naming the file a temp was for rather than the temp."""
    cause = err.strerror or str(err) or type(err).__name__
    cause = cause[:1].lower() + cause[1:]
    name = err.filename
    if name is None:
        return cause
    name = os.fsdecode(name)
    target = temp_target(os.path.basename(name))
    if target is not None:
        name = os.path.join(os.path.dirname(name), target)
    return f"{name}: {cause}"


def writable_problem(folder: str | os.PathLike) -> str | None:
    """Why output files cannot be made in ``folder`` (created if missing), or None if they can.

    Checked by making (and removing) an empty temp file in it, or, when it does not exist yet,
    in the nearest folder above it that does (where it would be made), so a read-only file
    system, missing permissions or a file in the way are found before any work."""
    probe = Path(folder)
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    if probe.is_symlink() and not probe.exists():
        return f"{probe}: broken symbolic link"
    if not probe.is_dir():
        return f"{probe}: exists and is not a folder"
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tal-write-check-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        err.filename = None
        return f"{probe}: {os_error_text(err)}"
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp gives 0600


def write_target(path: str | os.PathLike) -> Path:
    """The file a write to ``path`` replaces: ``path``, or for a symbolic link its final target
    (a link is written through, so it stays a link). OSError, one line, for what is never
    replaced: a broken link or link loop, a folder, a device, FIFO or socket (temp + rename
    would swap a device node for a regular file: as root, system-wide)."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if not os.path.islink(path):
            return path
        raise OSError(errno.ENOENT, f"broken symbolic link (target {os.path.realpath(path)} does "
                      "not exist); never followed", str(path)) from None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EPERM, "not a regular file (a device, FIFO or socket); never replaced",
                      str(path))
    return Path(os.path.realpath(path)) if os.path.islink(path) else path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path. Creates parent folders.

    A symbolic link is written through: the temp is made beside its final target and renamed
    onto it (:func:`write_target`); a device, FIFO, socket or broken link is refused."""
    given = Path(path)
    given.parent.mkdir(parents=True, exist_ok=True)
    path = write_target(given)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(err, OSError) and err.filename is None:  # a write: name what it was for
            err.filename = str(path)
        raise
    return given


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


NAME_MAX = 255  # bytes in one file name (ext4, xfs, btrfs, tmpfs, NFS, ...)
_RANDOM = 8  # characters tempfile.mkstemp puts between prefix and suffix


def fit_name(prefix: str, name: str, suffix: str, room: int = 0) -> str:
    """``prefix + name + suffix``, or, if that (plus ``room`` bytes) is longer than NAME_MAX,
    with ``name`` cut and followed by ``~`` and 12 hex digits of its SHA-256: still unique,
    within the limit (for the temps and locks of outputs whose own names fit)."""
    whole = prefix + name + suffix
    if len(os.fsencode(whole)) + room <= NAME_MAX:
        return whole
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:12]
    keep = NAME_MAX - room - len(os.fsencode(prefix + suffix)) - 1 - len(digest)
    head = os.fsencode(name)[: max(0, keep)].decode("utf-8", "ignore")
    return f"{prefix}{head}~{digest}{suffix}"


def temp_prefix(name: str) -> str:
    """Start of the temp names of target ``name``: ``.<name>.`` (shortened, :func:`fit_name`,
    where the temp's whole name would pass NAME_MAX)."""
    return fit_name(".", name, ".", room=_RANDOM + len(".part"))


def is_temp_of(temp: str, name: str) -> bool:
    """Whether ``temp`` is a temp file name written here for target ``name``."""
    prefix = temp_prefix(name)
    rand = temp[len(prefix) : -len(".part")] if temp.endswith(".part") else ""
    return temp.startswith(prefix) and bool(rand) and "." not in rand


def temp_target(name: str) -> str | None:
    """The file a temp named ``name`` (``.<target>.<random>.part``, as written here) was for
    (shortened as :func:`temp_prefix` does for very long names); None if ``name`` is not such a
    temp. The random part never contains a dot."""
    if not (name.startswith(".") and name.endswith(".part")):
        return None
    target, dot, rand = name[1 : -len(".part")].rpartition(".")
    return target if dot and target and rand else None


def remove_stale_temps(
    folder: str | os.PathLike, names: Iterable[str] | None = None, min_age_s: float = 0.0
) -> int:
    """Delete ``.*.part`` temp files a killed run left in ``folder``; returns how many.

    ``names``: only the temps of these target file names (e.g. one video's outputs, whose lock
    the caller holds: never another live process's temps). ``min_age_s``: only temps not
    modified for that long (a live writer keeps touching its temp).
    """
    wanted = None if names is None else list(names)
    now = time.time()
    n = 0
    for p in Path(folder).glob(".*.part"):
        if temp_target(p.name) is None:
            continue
        if wanted is not None and not any(is_temp_of(p.name, w) for w in wanted):
            continue
        try:
            if min_age_s > 0 and now - p.stat().st_mtime < min_age_s:
                continue
            p.unlink()
            n += 1
        except OSError:
            pass
    return n
