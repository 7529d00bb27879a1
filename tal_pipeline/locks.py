"""Per-video and per-output file locks (``fcntl.flock``), for runs that share an output.

``flock`` belongs to an open file description and the kernel drops it when the process dies
(even by SIGKILL), so a killed run never leaves a stale lock; the lock file itself is removed
on release. ``try_lock`` takes a lock or says it is held elsewhere; ``hold_lock`` waits for it;
shared locks let several runs share an output while one of them can still learn it is the last
(``FileLock.try_exclusive``); ``claim_folder`` keeps runs of different kinds (features,
detections) out of one folder at the same time. On a file system without locking, work goes on
unlocked with one warning.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Self

log = logging.getLogger(__name__)

_LOCKING_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
_warned_no_locking = False


def lock_path(lock_dir: str | os.PathLike, vid: str) -> Path:
    """``LOCKDIR/.<video_id>.lock``: held by the process working on that video (its name
    shortened, ``fsutil.fit_name``, for an id too long for it)."""
    from tal_pipeline.fsutil import fit_name

    return Path(lock_dir) / fit_name(".", vid, ".lock")


class FileLock:
    """A held ``flock`` on ``path``; ``release()`` (or the end of a ``with``) lets it go.

    ``release`` removes the file first, still holding the lock: a process that opened the file
    meanwhile finds, once it has the lock, that the path no longer names what it locked, and
    retries on a new file (:func:`try_lock`). ``fd`` None: no locking here (a no-op lock).
    """

    def __init__(self, path: Path, fd: int | None):
        self.path = path
        self.fd = fd

    def try_exclusive(self) -> bool:
        """A shared lock -> exclusive, without waiting: True if no other process holds it.

        On False the lock may be gone (flock converts by unlocking first): only release it.
        """
        if self.fd is None:
            return True
        fcntl = _fcntl()
        try:
            _flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def release(self, unlink: bool = True) -> None:
        """Unlock; ``unlink``: remove the file first (only while holding it exclusively)."""
        fd = self.fd
        if fd is None:
            return
        try:
            if unlink:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
        finally:
            self.fd = None  # only now: an interrupted release can be called again
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def try_lock(path: str | os.PathLike, shared: bool = False) -> FileLock | None:
    """Lock ``path`` (created, with its folder, if missing) without waiting; None if another
    process holds a conflicting lock. Exclusive, or ``shared``."""
    return _lock(Path(path), blocking=False, shared=shared)


def hold_lock(path: str | os.PathLike, shared: bool = False) -> FileLock:
    """Lock ``path`` like :func:`try_lock`, waiting for other processes' locks."""
    lock = _lock(Path(path), blocking=True, shared=shared)
    assert lock is not None
    return lock


def _lock(path: Path, blocking: bool, shared: bool) -> FileLock | None:
    fcntl = _fcntl()
    if fcntl is None:
        return FileLock(path, None)
    op = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            _flock(fd, op)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as err:
            os.close(fd)
            if err.errno not in _LOCKING_UNSUPPORTED:
                raise
            _warn_no_locking(path, err)
            path.unlink(missing_ok=True)
            return FileLock(path, None)
        except BaseException:
            os.close(fd)
            raise
        try:
            now = os.stat(path)
        except FileNotFoundError:
            now = None
        mine = os.fstat(fd)
        if now is not None and (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
            return FileLock(path, fd)
        os.close(fd)  # its holder removed it as we opened it: lock the path's new file


def claim_folder(folder: str | os.PathLike, kind: str, other: str,
                 holds_other: Callable[[Path], str | None]) -> FileLock:
    """Hold ``FOLDER/.tal-<kind>.lock`` (shared) for a whole run that writes files of ``kind``
    ("features", "detections") into ``folder``, so that runs of the ``other`` kind never write
    into it at the same time (several runs of one kind share it). Under
    ``FOLDER/.tal-kinds.lock`` (exclusive, for a moment, so two runs starting together are
    checked one after the other): a run of the other kind holding its lock, or what
    ``holds_other(folder)`` finds there already (a line naming a file, or None), is an
    InputError. ``release()`` the lock at the end (the last run removes the file)."""
    from tal_pipeline.errors import InputError

    folder = Path(folder)
    with hold_lock(folder / ".tal-kinds.lock"):
        probe = try_lock(folder / f".tal-{other}.lock")
        if probe is None:
            raise InputError(f"{folder}{os.sep}: another tal run is writing {other} into this "
                             f"folder now; {kind} and {other} never share a folder: use another -o")
        probe.release()
        found = holds_other(folder)
        if found:
            raise InputError(f"{folder}{os.sep}: the folder holds {other} ({found}); {kind} and "
                             f"{other} never share a folder: use another -o")
        return hold_lock(folder / f".tal-{kind}.lock", shared=True)


def release_claim(lock: FileLock) -> None:
    """Let go of :func:`claim_folder`'s lock; the last run of its kind removes the file."""
    lock.release(unlink=lock.try_exclusive())


def remove_left_lock(path: Path) -> None:
    """Remove a lock file a killed process left (no one holds it: take it, then release)."""
    if path.exists():
        lock = try_lock(path)
        if lock is not None:
            lock.release()


def _flock(fd: int, op: int) -> None:
    _fcntl().flock(fd, op)


def _fcntl():
    try:
        import fcntl
    except ImportError:  # not POSIX (Windows): no locking
        return None
    return fcntl


def _warn_no_locking(path: Path, err: OSError) -> None:
    global _warned_no_locking
    if not _warned_no_locking:
        _warned_no_locking = True
        log.warning("%s: file locks unsupported here (%s); do not run two processes on the "
                    "same output", path.parent, err.strerror or err)
