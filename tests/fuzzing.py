"""Fuzzing helpers: mutate real small videos, decode the mutants in a watched worker process.

Mutations (``apply``), each a tuple drawn by hypothesis (``tests/test_fuzz.py``): byte flips,
truncation, a range zeroed or filled with noise, a range duplicated, and headers spliced from
another container (the start of an mp4 on a webm, ...). Positions are integers taken modulo
the current length, so every drawn tuple applies to any file.

``Worker`` runs ``probe_video`` + ``decode_video`` on each mutant in a separate process (started
once: the decoder stays imported) and kills it when a mutant takes longer than its timeout, so
a hang is a finding, not a stuck test run. Run as a script, this file is that worker: one path
per line on stdin, one JSON line per path on stdout.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import subprocess
import sys
import time
from pathlib import Path

FLIP, CUT, ZERO, NOISE, DUP, SPLICE_HEAD, SPLICE_INSERT = range(7)
SEED_FRAMES, SEED_FPS = 12, 12  # the seed clips: 1 s, small enough for ~20 ms a mutant


def apply(data: bytes, ops, donors: dict[str, bytes]) -> bytes:
    """``data`` with each op applied in order; ops are ``(kind, a, b, c)`` integer tuples
    (``c`` picks the donor container for splices)."""
    out = bytearray(data)
    names = sorted(donors)
    for kind, a, b, c in ops:
        n = len(out)
        if n == 0:
            break
        at = a % n
        if kind == FLIP:  # xor one byte with a non-zero mask
            out[at] ^= (b % 255) + 1
        elif kind == CUT:  # keep a prefix (at least one byte)
            del out[max(1, at):]
        elif kind in (ZERO, NOISE):
            end = min(n, at + 1 + b % 4096)
            fill = bytes(end - at) if kind == ZERO else random.Random(b).randbytes(end - at)
            out[at:end] = fill
        elif kind == DUP:  # a range repeated in place (a re-sent packet, a copy bug)
            end = min(n, at + 1 + b % 4096)
            out[at:at] = out[at:end]
        else:
            donor = donors[names[c % len(names)]]
            head = donor[: 1 + b % min(len(donor), 8192)]
            if kind == SPLICE_HEAD:  # another container's header over ours
                out[: len(head)] = head
            else:  # another container's header inside ours
                out[at:at] = head
    return bytes(out)


# ----------------------------------------------------------------------------- the worker


def _check(path: str) -> dict:
    """What the library does with ``path``: ``ok`` (with the frame count), ``refused`` (the
    one-line cause), or ``error`` (anything else: a traceback, a broken invariant)."""
    import traceback

    import numpy as np

    from tal_pipeline.decode import decode_video, probe_video
    from tal_pipeline.errors import VideoDecodeError

    try:
        probe_video(path)
        n = 0
        for chunk in decode_video(path, chunk_size=64):
            k = np.arange(chunk.start, chunk.start + len(chunk), dtype=np.float64)
            if chunk.frames.shape[1:] != (112, 112, 3) or chunk.frames.dtype != np.uint8:
                return {"status": "error", "detail": f"frames {chunk.frames.dtype} {chunk.frames.shape}"}
            if chunk.start != n or not np.array_equal(chunk.times, k / 10.0):
                return {"status": "error", "detail": f"times of chunk at {chunk.start} (after {n})"}
            n += len(chunk)
        return {"status": "ok", "frames": n}
    except VideoDecodeError as err:
        if "\n" in str(err) or not err.cause:
            return {"status": "error", "detail": f"cause not one line: {err.cause!r}"}
        return {"status": "refused", "cause": err.cause}
    except Exception:  # noqa: BLE001 - a traceback is what the fuzzer looks for
        return {"status": "error", "detail": traceback.format_exc()}


def _serve() -> None:
    import logging

    logging.disable(logging.WARNING)  # the decoder's warnings about damage: expected here
    import torch  # noqa: F401 - imported by the real verbs too; same process state

    import tal_pipeline.decode  # noqa: F401

    print(json.dumps({"status": "ready"}), flush=True)
    for line in sys.stdin:
        print(json.dumps(_check(line.rstrip("\n"))), flush=True)


class Worker:
    """A worker process; ``check(path, timeout_s)`` -> its verdict, or ``hang`` / ``crash``."""

    def __init__(self):
        self.proc = None

    def _start(self) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=env)
        ready = self.proc.stdout.readline()  # after its imports: not counted as a mutant's time
        if not ready:
            raise RuntimeError("the fuzzing worker did not start")

    def check(self, path: str | os.PathLike, timeout_s: float) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        t = time.monotonic()
        self.proc.stdin.write(os.fspath(path) + "\n")
        self.proc.stdin.flush()
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout_s)
        sel.close()
        if not ready:
            self.close()
            return {"status": "hang", "detail": f"no answer in {time.monotonic() - t:.0f} s"}
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            return {"status": "crash", "detail": f"worker died (exit status {code})"}
        verdict = json.loads(line)
        verdict["seconds"] = time.monotonic() - t
        return verdict

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def seed_clips(folder: Path) -> dict[str, Path]:
    """The real small videos every mutant starts from: h264 mp4 (moov at the end), h264 mkv,
    VP9 webm; 1 s at 12 fps, 64 x 48."""
    from badfiles import write_clip

    folder.mkdir(parents=True, exist_ok=True)
    args = {"mp4": {}, "mkv": {}, "webm": {"codec": "libvpx-vp9", "pix_fmt": "yuv420p"}}
    return {ext: write_clip(folder / f"seed.{ext}", SEED_FRAMES, SEED_FPS, gop=4, **kw)
            for ext, kw in args.items()}


if __name__ == "__main__":
    _serve()
