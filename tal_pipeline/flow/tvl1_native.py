"""The TV-L1 solver's two hot steps in C (``tvl1_native.c``), built on first use and called
through ctypes on CPU tensors' memory: the inner iterations of a warp (``solve_warp``) and the
linearisation before them (``linearise``: bicubic warp, gain, data term).

Why: the eager inner loop is ~20 passes over arrays that do not fit in cache per iteration;
the C loop keeps one pair's arrays in cache for all its iterations (same operations, same
order, float rounding apart). No torch headers, so the build takes seconds, not a minute.

Build: the system C compiler (``$CC`` or ``cc``) with ``BUILD_FLAGS``, once per machine; the
library is cached in ``$XDG_CACHE_HOME/tal-pipeline`` (default ``~/.cache/tal-pipeline``)
under a name keyed by the source, the compiler, the flags and the CPU (``-march=native``: a
library built on another CPU may not run here). Several processes may build at once (Ray
workers, pytest workers): each writes a temporary file and renames it into place, so a
reader never sees half a library (a cache folder that cannot be written: a private build for
the process). One line on stderr when it has compiled; when there is no
compiler or the build fails, one line on stderr and the eager path (the same flow, float
rounding apart). ``TAL_FLOW_NATIVE=0`` (or ``TVL1Options(native=False)``) forces eager.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from tal_pipeline.flow.tvl1_blocks import GAIN_RANGE
from tal_pipeline.weights import cache_dir  # the seeded weights' folder: one cache per user

SOURCE = Path(__file__).with_name("tvl1_native.c")
ABI = 1  # TAL_TVL1_ABI in the source: the exported signature this module calls
# -fno-fast-math: IEEE results, deterministic; -ffp-contract=off: no multiply-add fused
# unless the source says so (fmaf, where ATen fuses), so the result does not depend on the
# vector width or the CPU; -fno-math-errno: sqrtf need not set errno (it lets the loop
# vectorise; the values are the same)
BUILD_FLAGS = ("-O3", "-march=native", "-fno-fast-math", "-ffp-contract=off", "-fno-math-errno",
               "-shared", "-fPIC")
BUILD_TIMEOUT_S = 120.0  # a compiler that hangs longer than this counts as a failed build
# A library no process has loaded for this long is another source's, compiler's or CPU's and is
# removed when a new one is built (a shared home keeps one per CPU in use); a build's temporary
# file this old was left by a killed build.
STALE_LIBRARY_S = 30 * 86400.0
STALE_TEMP_S = 3600.0
TOUCH_AFTER_S = 86400.0  # a loaded library's modification time is renewed at most this often
ENV_SWITCH = "TAL_FLOW_NATIVE"  # "0": never use the C loop in this process

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_failed: str | None = None  # why the library is not available (said once on stderr)


def _compiler() -> list[str]:
    """The C compiler command: ``$CC`` (may carry arguments) or ``cc``."""
    return shlex.split(os.environ.get("CC") or "") or ["cc"]


def _cpu_identity() -> bytes:
    """The CPU's model and feature flags (what ``-march=native`` compiles for); Linux only,
    elsewhere the machine name (then a cache shared between CPUs must not be used)."""
    try:
        with open("/proc/cpuinfo", "rb") as f:
            text = f.read(65536)
    except OSError:
        return os.uname().machine.encode()
    keep = [ln for ln in text.split(b"\n\n", 1)[0].splitlines()
            if ln.split(b":", 1)[0].strip() in (b"vendor_id", b"model name", b"flags")]
    return b"\n".join(keep)


def library_path(directory: Path | None = None) -> Path:
    """The cached library's path for this source, compiler, flags and CPU."""
    cc = _compiler()
    exe = shutil.which(cc[0]) if cc else None
    h = hashlib.sha256()
    h.update(SOURCE.read_bytes())
    h.update(repr((cc, BUILD_FLAGS)).encode())
    if exe:  # the compiler's identity without running it: path, size, modification time
        st = os.stat(exe)
        h.update(f"{os.path.realpath(exe)}:{st.st_size}:{st.st_mtime_ns}".encode())
    h.update(_cpu_identity())
    return (directory or cache_dir()) / f"tvl1_native-{h.hexdigest()[:20]}.so"


def build(target: Path, flags: tuple[str, ...] = BUILD_FLAGS) -> None:
    """Compile the source into ``target`` atomically (temporary file, then rename); raises
    ``RuntimeError`` with the compiler's first line of complaint. ``flags``: the tests build
    for another instruction set with them."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        cmd = [*_compiler(), *flags, "-o", tmp, str(SOURCE)]
        try:
            done = subprocess.run(cmd, check=False, capture_output=True, text=True, errors="replace",
                                  timeout=BUILD_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise RuntimeError(f"{cmd[0]}: {err}") from None
        if done.returncode != 0 or os.path.getsize(tmp) == 0:
            lines = (done.stderr or done.stdout or "").strip().splitlines()
            why = lines[0] if lines else f"exit status {done.returncode}"
            raise RuntimeError(f"{cmd[0]} failed: {why}")
        os.replace(tmp, target)  # atomic: another process sees the old name or the whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load() -> ctypes.CDLL:
    """Load the cached library, building it first if it is not there; where the cache folder
    cannot be written (a read-only home), build one for this process in a private temporary
    folder, removed once loaded (the loaded library stays mapped)."""
    path = library_path()
    if path.exists():
        _mark_used(path)
        return load_library(path)
    start = time.perf_counter()  # said after the build: a failed build is then one line
    try:
        build(path)
    except OSError as err:  # the folder, not the compiler (that is a RuntimeError)
        with tempfile.TemporaryDirectory(prefix="tal-tvl1-") as private:
            path = library_path(Path(private))
            build(path)
            lib = load_library(path)
        print(f"tal: compiled the TV-L1 kernel in {time.perf_counter() - start:.1f} s for this "
              f"process only (cache folder not writable: {err})", file=sys.stderr, flush=True)
        return lib
    print(f"tal: compiled the TV-L1 kernel in {time.perf_counter() - start:.1f} s, once for "
          f"this machine ({path})", file=sys.stderr, flush=True)
    prune(path)
    return load_library(path)


def _mark_used(path: Path) -> None:
    """Renew a loaded library's modification time (at most once a day), which :func:`prune`
    reads as its last use; a read-only cache is left as it is."""
    try:
        if time.time() - path.stat().st_mtime > TOUCH_AFTER_S:
            os.utime(path)
    except OSError:
        pass


def prune(keep: Path, now: float | None = None) -> list[Path]:
    """Remove, beside ``keep``, the kernel libraries unused for ``STALE_LIBRARY_S`` and build
    temporaries older than ``STALE_TEMP_S`` (each source or compiler change builds a new
    library, so without this the cache only grows). Returns what was removed; a file another
    process removes first, or one that cannot be removed, is skipped."""
    now = time.time() if now is None else now
    removed = []
    for p in keep.parent.glob("tvl1_native-*"):
        if p == keep:
            continue
        stale = STALE_TEMP_S if p.name.endswith(".tmp") else STALE_LIBRARY_S
        try:
            if p.suffix in (".so", ".tmp") and now - p.stat().st_mtime > stale:
                p.unlink()
                removed.append(p)
        except OSError:
            continue
    return removed


def load_library(path: Path) -> ctypes.CDLL:
    """Open a built library and declare its functions' arguments."""
    lib = ctypes.CDLL(str(path))
    if lib.tal_tvl1_abi() != ABI:
        raise RuntimeError(f"{path} has ABI {lib.tal_tvl1_abi()}, expected {ABI}")
    f = lib.tal_tvl1_solve
    ptr, i, flt = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    f.argtypes = [i, i, i, ptr, ptr, ptr, ptr, ptr, flt, flt, flt, i, i, flt, ptr]
    f.restype = i
    f = lib.tal_tvl1_linearise
    f.argtypes = [i, i, i, ptr, ptr, ptr, i, flt, flt, flt, ptr, ptr, ptr, ptr]
    f.restype = None
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded library, or None (disabled by ``TAL_FLOW_NATIVE=0``, or it could not be built:
    said once on stderr)."""
    global _lib, _failed
    if _lib is not None:
        return _lib
    if os.environ.get(ENV_SWITCH, "1").strip() == "0":
        return None
    with _lock:
        if _lib is None and _failed is None:
            try:
                _lib = _load()
            except (OSError, RuntimeError, ValueError) as err:  # ValueError: $CC unparsable
                _failed = str(err).splitlines()[0] if str(err) else type(err).__name__
                print(f"tal: TV-L1 kernel not available ({_failed}); computing the flow in torch "
                      "instead (slower)", file=sys.stderr, flush=True)
    return _lib


def reset() -> None:
    """Forget the loaded library and any failure (tests: another cache or compiler)."""
    global _lib, _failed
    with _lock:
        _lib, _failed = None, None


def _ptr(t: torch.Tensor) -> int:
    if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous():
        raise ValueError("the TV-L1 kernel takes contiguous float32 CPU tensors")
    return t.data_ptr()


def solve_warp(
    lib: ctypes.CDLL,
    u: torch.Tensor,  # (B, 2, H, W) flow, pixels; updated in place
    p: torch.Tensor,  # (B, 2, 2, H, W) dual variables; updated in place
    g: torch.Tensor,  # (B, 2, H, W) gradient of the warped I1
    rho_c: torch.Tensor,  # (B, 1, H, W) constant part of the linearised residual
    inv_g2: torch.Tensor,  # (B, 1, H, W) 1 / (|∇I1w|² + tiny)
    lt: float, theta: float, taut: float, iterations: int, check_every: int, eps2: float,
) -> int:
    """The inner iterations of one warp, ``tvl1_torch._solve_warp``'s semantics (each pair stops
    at its own convergence test); returns how many pairs stopped early."""
    b, _, h, w = u.shape
    for t, shape in ((u, (b, 2, h, w)), (p, (b, 2, 2, h, w)), (g, (b, 2, h, w)),
                     (rho_c, (b, 1, h, w)), (inv_g2, (b, 1, h, w))):
        if tuple(t.shape) != shape:
            raise ValueError(f"TV-L1 kernel: shape {tuple(t.shape)}, expected {shape}")
    change = torch.empty(w, dtype=torch.float32)  # one row of per-pixel changes
    return lib.tal_tvl1_solve(b, h, w, _ptr(u), _ptr(p), _ptr(g), _ptr(rho_c), _ptr(inv_g2),
                              lt, theta, taut, iterations, check_every, eps2, _ptr(change))


def linearise(
    lib: ctypes.CDLL,
    stack1: torch.Tensor,  # (B, 3, H, W) I1 and its centred gradient
    u: torch.Tensor,  # (B, 2, H, W) flow, pixels
    img0: torch.Tensor,  # (B, 1, H, W) I0
    with_gain: bool,  # scale I1 by its gain on the aligned frames (``aligned_gain``)
    tiny: float,  # added to |g|² before the reciprocal
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``tvl1_torch._linearise`` with bicubic warping, one C pass per pair: g ``(B, 2, H, W)``,
    rho_c and 1 / |g|² ``(B, 1, H, W)``."""
    b, _, h, w = u.shape
    for t, c in ((stack1, 3), (u, 2), (img0, 1)):
        if tuple(t.shape) != (b, c, h, w):
            raise ValueError(f"TV-L1 kernel: shape {tuple(t.shape)}, expected {(b, c, h, w)}")
    g = torch.empty(b, 2, h, w)
    rho_c, inv_g2 = torch.empty(b, 1, h, w), torch.empty(b, 1, h, w)
    work = torch.empty(2 * h * w)  # the warped I1 and the gain's ratios of one pair
    lib.tal_tvl1_linearise(b, h, w, _ptr(stack1), _ptr(u), _ptr(img0),
                           int(with_gain), *GAIN_RANGE, tiny,
                           _ptr(g), _ptr(rho_c), _ptr(inv_g2), _ptr(work))
    return g, rho_c, inv_g2


__all__ = ["BUILD_FLAGS", "ENV_SWITCH", "build", "cache_dir", "library", "library_path", "linearise",
           "load_library", "prune", "reset", "solve_warp"]
