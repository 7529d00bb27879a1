"""TV-L1 optical flow as one batched PyTorch computation over many frame pairs (CPU or CUDA).

The method is Zach, Pock and Bischof (2007), in the form of Sánchez Pérez, Meinhardt-Llopis
and Facciolo, "TV-L1 Optical Flow Estimation" (IPOL 2013): the second frame's brightness
matched to the first's when their means differ by more than ~10 % (an exposure step would
otherwise be read as motion: ``gain_ratio``), both frames pre-smoothed (IPOL's Gaussian,
sigma 0.8), a pyramid of bilinear, antialiased downscaling by ``scale_step``, and a global
gain of I1 re-estimated on the aligned frames at every warp (flicker and drift of a few
percent: ``aligned_gain``):

    for each level, coarsest first (flow upsampled from the level below, dual variables reset):
        for each warp:
            warp I1 and its centred gradient by the current flow (bicubic or bilinear)
            scale both by the gain: median of log I0 - log I1w where the sample is inside
            rho_c = I1w - ∇I1w·u0 - I0                      (linearised data term)
            optionally median-filter u (OpenCV filters before each outer iteration)
            optionally (affine_tv) take out u's dominant affine part a: u -= a, rho_c += ∇I1w·a
            repeat until mean |u - u_prev|² < epsilon² or the iteration cap:
                v = u - ∇I1w · clamp(rho(u) / |∇I1w|², -λθ, λθ)    (the three-case threshold)
                u = v + θ div(p)                                  (backward differences)
                p = (p + τ/θ ∇u) / (1 + τ/θ |∇u|)                 (forward differences)
            (affine_tv) u += a

The pyramid, gain, derivative, median and warp helpers are in ``tvl1_blocks``. On the CPU, the
two hot steps of each warp (the linearisation, from the warp to 1/|∇I1w|², and the inner
iterations) run in C (``tvl1_native``) when it builds: the same operations, the same flow up
to float rounding; ``TVL1Options(native=False)`` or ``TAL_FLOW_NATIVE=0`` keeps them in torch.
The batch dimension is the frame pairs: every tensor is ``(B, ...)`` and there is no Python
loop over pairs. Loops run over levels, warps and iterations only.

Convergence check: each check costs one reduction (and, on CUDA, a host sync), so it runs every
``check_every`` iterations, and the batch stops when *all* its pairs are below ``epsilon``.
With ``check_every=0`` every warp runs exactly ``iterations`` iterations (no sync at all), the
right choice on a GPU, where the fixed-length loop is compiled into a few fused kernels.
"""

from __future__ import annotations

import math
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from tal_pipeline.flow import tvl1_native
from tal_pipeline.flow.tvl1_blocks import (
    _resize,
    aligned_gain,
    centred_gradient,
    divergence,
    dominant_affine,
    forward_gradient,
    gain_ratio,
    gaussian_blur,
    log_intensity,
    median_filter,
    warp,
)

MIN_LEVEL_PX = 12  # a pyramid level is not made smaller than this (pixels, shorter side)
_TINY_GRAD2 = 1e-9  # |∇I|² below this gives no data step (grey levels², the IPOL/OpenCV guard)


@dataclass(frozen=True)
class TVL1Options:
    """Parameters of the batched TV-L1 solver (see the module docstring for the iteration).

    The defaults differ from OpenCV's on purpose (measured in BENCHMARKS.md, "Flow"): a deeper
    pyramid (8 levels at 0.7 instead of 5 at 0.8, coarsest ~13 px at 112 px) so that motions of
    10-20 px at 10 fps are found with few iterations (OpenCV's 5 levels miss shifts of 6-12 px),
    10 iterations per warp (15 on the finest level) instead of up to 300, and a 3x3 median once
    per warp instead of 5x5 every 30 iterations. What buys back the accuracy of OpenCV's long
    runs on small motions: both frames pre-smoothed (Gaussian, sigma 0.8: less quantisation noise
    in the gradients) and an antialiased pyramid (no aliasing at the coarse levels, whose flow
    the finer ones start from). On known motions of real footage this is as accurate as OpenCV's
    defaults or better for every motion kind, at a fraction of the work.
    """

    tau: float = 0.25  # primal-dual time step (τ ≤ 0.25 for stability), as OpenCV/IPOL
    lambda_: float = 0.15  # weight of the data term (larger: less smoothing), as OpenCV/IPOL
    theta: float = 0.3  # coupling between u and v, as OpenCV/IPOL
    scales: int = 8  # pyramid levels (fewer when a level would be under MIN_LEVEL_PX)
    scale_step: float = 0.7  # size ratio between levels: 112 -> 78 -> 55 -> ... -> 13 px
    warps: int = 5  # warps (re-linearisations) per level
    iterations: int = 10  # inner iterations per warp (a cap when check_every > 0)
    epsilon: float = 0.01  # stop when mean over pixels of |u - u_prev|² < epsilon² (pixels²)
    check_every: int = 5  # convergence test every k iterations; 0: fixed count, no host sync
    median: int = 3  # median filter size applied to u at the start of each warp; 0/1: none
    interpolation: str = "bicubic"  # warping: "bicubic" (IPOL, OpenCV) or "bilinear"
    batch_pairs: int = 64  # frame pairs per batch, at most (bounds memory: ~30 floats per pixel)
    # ... and at most this many when one CPU worker runs them all: its eager loop is
    # memory-bound, and smaller batches keep its arrays in cache. Not with several workers:
    # there per-operation overhead, serialised by the GIL, outweighs the cache (a pair's flow
    # is the same in any batch; BENCHMARKS.md, issue #12 round 9)
    single_worker_pairs: int = 16
    compile: str = "auto"  # torch.compile the inner loop: "auto" (CUDA only), "always", "never"
    finest_iterations: int = 15  # inner iterations per warp on the finest level; 0: ``iterations``
    finest_warps: int = 0  # warps on the finest level; 0: ``warps``
    presmooth: float = 0.8  # Gaussian sigma (pixels) applied to both frames first (IPOL's); 0: none
    antialias: bool = True  # low-pass the pyramid's downscaling (bilinear with antialias)
    match_gain: bool = True  # scale I1 to I0's mean brightness if > ~10 % apart (exposure steps)
    warp_gain: bool = True  # re-estimate I1's gain on the aligned frames at every warp (flicker)
    # regularise the flow less its dominant affine part (``dominant_affine``, re-estimated at
    # every warp) instead of the flow: TV-L1 shrinks rotations, zooms and shears otherwise
    affine_tv: bool = False
    # run the inner iterations in the C kernel (``tvl1_native``) on the CPU when it builds: the
    # same flow up to float rounding, faster; False (or TAL_FLOW_NATIVE=0): torch operations
    native: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.tau <= 0.25:
            raise ValueError(f"tau must be in (0, 0.25], got {self.tau}")
        if self.lambda_ <= 0 or self.theta <= 0 or self.epsilon < 0:
            raise ValueError("lambda_ and theta must be > 0, epsilon >= 0")
        if (self.scales < 1 or self.warps < 1 or self.iterations < 1 or self.batch_pairs < 1
                or self.single_worker_pairs < 1):
            raise ValueError("scales, warps, iterations, batch_pairs and single_worker_pairs must be >= 1")
        if not 0 < self.scale_step < 1:
            raise ValueError(f"scale_step must be in (0, 1), got {self.scale_step}")
        if self.median not in (0, 1, 3, 5):
            raise ValueError(f"median must be 0, 1, 3 or 5, got {self.median}")
        if self.interpolation not in ("bicubic", "bilinear"):
            raise ValueError(
                f"interpolation must be 'bicubic' or 'bilinear', got {self.interpolation!r}"
            )
        if self.compile not in ("auto", "always", "never"):
            raise ValueError(f"compile must be 'auto', 'always' or 'never', got {self.compile!r}")
        if self.check_every < 0:
            raise ValueError("check_every must be >= 0")
        if self.finest_iterations < 0 or self.finest_warps < 0 or not 0 <= self.presmooth <= 3:
            raise ValueError("finest_iterations, finest_warps must be >= 0, presmooth in [0, 3]")


# GPU preset: fixed iteration count (no host sync), big batches, compiled inner loop.
CUDA_OPTIONS = TVL1Options(check_every=0, batch_pairs=4096)


def options_for(device: torch.device | str) -> TVL1Options:
    """The default options for a device: ``CUDA_OPTIONS`` on CUDA, ``TVL1Options()`` elsewhere."""
    return CUDA_OPTIONS if torch.device(device).type == "cuda" else TVL1Options()


# ---------------------------------------------------------------------------------------------
# building blocks (all batched over pairs)


def level_sizes(h: int, w: int, opts: TVL1Options) -> list[tuple[int, int]]:
    """(H, W) of each pyramid level, finest first; OpenCV's rounding of ``size * scale_step``."""
    sizes = [(h, w)]
    for _ in range(1, opts.scales):
        ph, pw = sizes[-1]
        nh, nw = math.floor(ph * opts.scale_step + 0.5), math.floor(pw * opts.scale_step + 0.5)
        if min(nh, nw) < MIN_LEVEL_PX:
            break
        sizes.append((nh, nw))
    return sizes


def _inner_iterations(
    u: torch.Tensor,  # (B, 2, H, W) flow, pixels
    p: torch.Tensor,  # (B, 2, 2, H, W) dual variables: [flow component, direction]
    g: torch.Tensor,  # (B, 2, H, W) gradient of the warped I1
    rho_c: torch.Tensor,  # (B, 1, H, W) constant part of the linearised residual
    inv_g2: torch.Tensor,  # (B, 1, H, W) 1 / (|∇I1w|² + tiny)
    lt: float,  # lambda * theta
    theta: float,
    taut: float,  # tau / theta
    n: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` primal-dual iterations; functional (no in-place ops) so torch.compile can fuse it."""
    for _ in range(n):
        rho = rho_c + (g * u).sum(1, keepdim=True)  # (B, 1, H, W)
        v = u - g * (rho * inv_g2).clamp(-lt, lt)  # the three cases in one expression
        u = v + theta * divergence(p)  # (B, 2, H, W)
        du = forward_gradient(u)  # (B, 2, 2, H, W)
        norm = 1.0 + taut * du.square().sum(2, keepdim=True).sqrt()  # (B, 2, 1, H, W)
        p = (p + taut * du) / norm
    return u, p


def _inner_iterations_inplace(
    u: torch.Tensor,
    p: torch.Tensor,
    g: torch.Tensor,
    rho_c: torch.Tensor,
    inv_g2: torch.Tensor,
    lt: float,
    theta: float,
    taut: float,
    n: int,
    scratch: tuple[torch.Tensor, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``_inner_iterations`` for eager mode: updates ``u`` and ``p`` in place, no allocations.

    About 20 tensor operations per iteration instead of ~40 with temporaries: eager PyTorch is
    memory-bound here, so every pass saved counts. Relies on the solver's invariant that the x
    part of ``p`` is zero on the last column and the y part on the last row. ``scratch``: the
    work arrays of ``_scratch(u, p, rho_c)``, reused by the caller across calls of one warp
    (fresh arrays cost a page fault per page at every convergence check).
    """
    d, rho, du, nrm = scratch if scratch is not None else _scratch(u, p, rho_c)
    g0, g1, u0, u1 = g[:, 0:1], g[:, 1:2], u[:, 0:1], u[:, 1:2]
    px, py, gx, gy = p[:, :, 0], p[:, :, 1], du[:, :, 0], du[:, :, 1]  # (B, 2, H, W) views
    for _ in range(n):
        torch.addcmul(rho_c, g0, u0, out=rho)
        rho.addcmul_(g1, u1).mul_(inv_g2).clamp_(-lt, lt)  # the three-case step, / |∇I1w|
        u.addcmul_(g, rho, value=-1.0)  # u <- v
        torch.sub(px[..., 1:], px[..., :-1], out=d[..., 1:])  # backward differences
        d[..., 0] = px[..., 0]
        d[..., 1:, :].add_(py[..., 1:, :]).sub_(py[..., :-1, :])
        d[..., 0, :].add_(py[..., 0, :])
        u.add_(d, alpha=theta)  # u <- v + θ div p
        torch.sub(u[..., 1:], u[..., :-1], out=gx[..., :-1])  # forward differences
        torch.sub(u[..., 1:, :], u[..., :-1, :], out=gy[..., :-1, :])
        torch.mul(gx, gx, out=nrm)  # |∇u|: faster than torch.hypot (not vectorised on CPU)
        nrm.addcmul_(gy, gy).sqrt_().mul_(taut).add_(1.0)
        p.add_(du, alpha=taut).div_(nrm[:, :, None])
    return u, p


def _scratch(u: torch.Tensor, p: torch.Tensor, rho_c: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Work arrays of ``_inner_iterations_inplace``: div p, rho, ∇u and its norm."""
    d = torch.empty_like(u)  # (B, 2, H, W) div p
    rho = torch.empty_like(rho_c)  # (B, 1, H, W)
    du = torch.zeros_like(p)  # (B, 2, 2, H, W) ∇u; last column (x) / row (y) stay zero
    nrm = torch.empty_like(u)  # (B, 2, H, W) 1 + τ/θ |∇u|
    return d, rho, du, nrm


_compiled_lock = threading.Lock()
_compiled: dict[tuple, object] = {}  # (device type, n, λθ, θ, τ/θ) -> compiled n iterations
_compile_failed: set[str] = set()  # device types where compilation failed once


def _compiled_iterations(device: torch.device, n: int, lt: float, theta: float, taut: float):
    """``_inner_iterations`` with ``n`` and the scalars fixed, through ``torch.compile``.

    Everything but the tensors is a closure constant, so dynamo unrolls the loop once per ``n``
    and never turns ``n`` into a symbolic int (which ``range`` under ``fullgraph`` rejects).
    Shapes become dynamic after the second pyramid level (automatic dynamic shapes).
    """
    key = (device.type, n, lt, theta, taut)
    with _compiled_lock:
        fn = _compiled.get(key)
        if fn is None:

            def iterations(u, p, g, rho_c, inv_g2):
                return _inner_iterations(u, p, g, rho_c, inv_g2, lt, theta, taut, n)

            fn = _compiled[key] = torch.compile(iterations, fullgraph=True)
    return fn


def _use_compile(device: torch.device, opts: TVL1Options) -> bool:
    """Whether the inner loop runs compiled: asked for, and not failed before on this device."""
    want = opts.compile == "always" or (opts.compile == "auto" and device.type == "cuda")
    return want and device.type not in _compile_failed


def _run_iterations(
    compiled: bool, u, p, g, rho_c, inv_g2, lt: float, theta: float, taut: float, n: int,
    scratch: tuple[torch.Tensor, ...] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` inner iterations, compiled or in-place eager; a compiler failure warns once and
    falls back to eager for good on that device type."""
    device = u.device
    if compiled and device.type not in _compile_failed:
        try:
            return _compiled_iterations(device, n, lt, theta, taut)(u, p, g, rho_c, inv_g2)
        except Exception as err:  # noqa: BLE001 - any compiler failure (no C++ compiler, no Triton...)
            _compile_failed.add(device.type)
            first_line = str(err).splitlines()[0] if str(err) else ""
            warnings.warn(
                f"torch.compile of the TV-L1 inner loop failed on {device.type} "
                f"({type(err).__name__}: {first_line}); running it eagerly",
                RuntimeWarning,
                stacklevel=3,
            )
    return _inner_iterations_inplace(u, p, g, rho_c, inv_g2, lt, theta, taut, n, scratch)


def _solve_warp(
    compiled: bool, u: torch.Tensor, p: torch.Tensor, args: tuple, opts: TVL1Options, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The inner iterations of one warp, with the convergence test every ``check_every``.

    A pair whose change falls under ``epsilon`` is frozen at that state (its later updates are
    undone), so each pair's result is what it would be alone: independent of its batch mates
    and of the batch size. The loop ends when every pair is frozen or at the iteration cap.
    """
    eps2 = opts.epsilon**2
    lib = None if compiled or u.device.type != "cpu" or not opts.native else tvl1_native.library()
    if lib is not None:  # the C loop: each pair tested and frozen on its own, as below
        u, p = u.contiguous(), p.contiguous()
        tvl1_native.solve_warp(lib, u, p, *args, iterations, opts.check_every, eps2)
        return u, p
    frozen = None  # (B,) bool, pairs that converged
    kept = None  # (u, p) as they were when the last pairs froze
    done, k = 0, opts.check_every
    scratch = None if compiled else _scratch(u, p, args[1])  # args[1]: rho_c; one set per warp
    u_prev = torch.empty_like(u) if k > 0 else None  # (B, 2, H, W) u before the tested iteration
    while done < iterations:
        if 0 < k and done + k < iterations:  # run k, test the last one's change
            if k > 1:
                u, p = _run_iterations(compiled, u, p, *args, k - 1, scratch)
            u_prev.copy_(u)
            u, p = _run_iterations(compiled, u, p, *args, 1, scratch)
            done += k
            converged = (u - u_prev).square().sum(1).mean((1, 2)) < eps2  # (B,)
            if frozen is not None:
                u, p = _restore(u, p, frozen, kept)
                converged |= frozen
            if bool(converged.all()):  # one host sync per check
                break
            if bool(converged.any()) and (frozen is None or bool((converged != frozen).any())):
                kept = (u.clone(), p.clone())
            frozen = converged
        else:  # the remaining iterations in one go
            u, p = _run_iterations(compiled, u, p, *args, iterations - done, scratch)
            done = iterations
            if frozen is not None:
                u, p = _restore(u, p, frozen, kept)
    return u, p


def _restore(
    u: torch.Tensor, p: torch.Tensor, frozen: torch.Tensor, kept
) -> tuple[torch.Tensor, torch.Tensor]:
    """Put back the kept state of the frozen pairs: ``frozen (B,)`` bool."""
    if kept is None:
        return u, p
    return (
        torch.where(frozen.view(-1, 1, 1, 1), kept[0], u),
        torch.where(frozen.view(-1, 1, 1, 1, 1), kept[1], p),
    )


def _linearise(
    stack1: torch.Tensor, u: torch.Tensor, img0: torch.Tensor, log0: torch.Tensor | None,
    interpolation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The data term linearised at ``u``: I1 and its gradient ``stack1 (B, 3, h, w)`` warped
    by ``u (B, 2, h, w)``, scaled by I1's gain on the aligned frames when ``log0`` (frame 0's
    ``log_intensity``) is given; returns g ``(B, 2, h, w)``, rho_c and 1 / |g|² ``(B, 1, h, w)``.
    """
    warped = warp(stack1, u, interpolation)  # (B, 3, h, w)
    if log0 is not None:  # I1 and its gradient scale together
        warped.mul_(aligned_gain(img0, warped[:, 0:1], u, log0))
    g = warped[:, 1:3].contiguous()  # (B, 2, h, w)
    rho_c = (warped[:, 0:1] - (g * u).sum(1, keepdim=True) - img0).contiguous()
    inv_g2 = 1.0 / (g.square().sum(1, keepdim=True) + _TINY_GRAD2)
    return g, rho_c, inv_g2  # peak memory: warped is freed here (g holds it only when B = 1)


# ---------------------------------------------------------------------------------------------
# the solver


@torch.no_grad()
def tvl1_pairs(i0: torch.Tensor, i1: torch.Tensor, opts: TVL1Options | None = None) -> torch.Tensor:
    """TV-L1 flow from ``i0`` to ``i1`` for a batch of pairs.

    Args:
        i0, i1: ``(B, H, W)`` float32 grey frames in [0, 255], on the device to compute on.
        opts: solver parameters (``options_for(device)`` when None).

    Returns:
        ``(B, 2, H, W)`` float32 flow in pixels, (dx, dy): the content at (x, y) in ``i0`` is at
        (x + dx, y + dy) in ``i1``.
    """
    opts = opts or options_for(i0.device)
    device = i0.device
    compiled = _use_compile(device, opts)
    # the C kernel's linearisation (bicubic only; bilinear stays in torch)
    lib = (tvl1_native.library() if device.type == "cpu" and opts.native and not compiled
           and opts.interpolation == "bicubic" else None)
    b, h, w = i0.shape
    sizes = level_sizes(h, w, opts)
    lt, theta, taut = opts.lambda_ * opts.theta, opts.theta, opts.tau / opts.theta

    # pyramids, finest first: (B, 2, h, w) with I0 in channel 0 and I1 in channel 1
    i0, i1 = i0.float(), i1.float()
    if opts.match_gain:  # brightness constancy fails under an exposure change: remove it
        i1 = i1 * gain_ratio(i0, i1).view(-1, 1, 1)
    pyr = [torch.stack([i0, i1], 1)]
    if opts.presmooth > 0:
        pyr[0] = gaussian_blur(pyr[0], opts.presmooth)
    for size in sizes[1:]:
        pyr.append(_resize(pyr[-1], size, opts.antialias))

    u = torch.zeros(b, 2, *sizes[-1], device=device, dtype=torch.float32)
    for level in range(len(sizes) - 1, -1, -1):
        lh, lw = sizes[level]
        if u.shape[-2:] != (lh, lw):  # upsample the coarser flow, rescaling its units
            ph, pw = u.shape[-2:]
            u = _resize(u, (lh, lw))
            u = u * torch.tensor([lw / pw, lh / ph], device=device).view(1, 2, 1, 1)
        img0 = pyr[level][:, 0:1].contiguous()  # (B, 1, h, w)
        img1 = pyr[level][:, 1]  # (B, h, w)
        stack1 = torch.cat([img1[:, None], centred_gradient(img1)], 1)  # (B, 3, h, w): I1, I1x, I1y
        p = torch.zeros(b, 2, 2, lh, lw, device=device, dtype=torch.float32)
        finest = level == 0
        warps = (opts.finest_warps or opts.warps) if finest else opts.warps
        iterations = (opts.finest_iterations or opts.iterations) if finest else opts.iterations
        log0 = log_intensity(img0) if opts.warp_gain and lib is None else None  # (B, 1, h, w)
        for _ in range(warps):
            if lib is not None:  # the same steps in one C pass per pair
                u = u.contiguous()
                g, rho_c, inv_g2 = tvl1_native.linearise(lib, stack1, u, img0, opts.warp_gain,
                                                         _TINY_GRAD2)
            else:
                g, rho_c, inv_g2 = _linearise(stack1, u, img0, log0, opts.interpolation)
            if opts.median > 1:
                u = median_filter(u, opts.median)
            # affine_tv: solve for w = u - a, the flow less its dominant affine part a, so that
            # TV acts on w; the data term of u = w + a is rho_c + ∇I1w·a + ∇I1w·w
            a = dominant_affine(u) if opts.affine_tv else None  # (B, 2, h, w)
            if a is not None:
                rho_c.add_((g * a).sum(1, keepdim=True))
                u = u - a
            u, p = _solve_warp(compiled, u, p, (g, rho_c, inv_g2, lt, theta, taut), opts, iterations)
            if a is not None:
                u = u + a
            del g, rho_c, inv_g2
    return u


class CPUWorkers:
    """Threads that run TV-L1 batches on the CPU, each computing with one intra-op thread.

    Why one intra-op thread each: independent batches scale better than OpenMP inside each
    small operation, and do not collapse when other processes share the cores. Who sets it:
    torch has no per-thread setting; a thread takes the process's intra-op thread count the
    first time it uses torch and keeps it. So the workers start, and take a count of 1, while
    the constructor holds the process's count at 1; it restores the count before returning.
    Build this in the thread that owns the process's torch settings (``FeatureExtractor`` does,
    in its constructor): batches then run on it from any thread (the extractor's prefetch
    thread) without changing any process-wide setting.
    """

    def __init__(self, threads: int | None = None):
        self.size = max(1, threads or torch.get_num_threads())
        self._pool = ThreadPoolExecutor(self.size, thread_name_prefix="tal-tvl1")
        started = threading.Barrier(self.size + 1)  # every worker has taken its count
        previous = torch.get_num_threads()
        torch.set_num_threads(1)  # the count the workers take (see the class docstring)
        try:
            for _ in range(self.size):  # each blocks a thread until all started: self.size threads
                self._pool.submit(self._start, started)
            started.wait()
        finally:
            torch.set_num_threads(previous)

    @staticmethod
    def _start(started: threading.Barrier) -> None:
        torch.get_num_threads()  # torch sets this thread's count from the process's (1 now)
        started.wait()

    def map(self, fn, items) -> list:
        return list(self._pool.map(fn, items))

    def close(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)


def tvl1_torch_pairs(
    first: np.ndarray | torch.Tensor,
    second: np.ndarray | torch.Tensor,
    device: str | torch.device = "cpu",
    opts: TVL1Options | None = None,
    threads: int | None = None,
    workers: CPUWorkers | None = None,
) -> np.ndarray:
    """Flow from ``first[k]`` to ``second[k]``: ``(P, H, W)`` x 2 in [0, 255] -> ``(P, 2, H, W)`` float32.

    Pairs run in batches of at most ``opts.batch_pairs`` (``opts.single_worker_pairs`` with one
    CPU worker). On the CPU the batches run on
    ``workers`` (:class:`CPUWorkers`, one intra-op thread each); without them, on ``threads``
    workers (default: ``torch.get_num_threads()``) started for this call, which briefly sets
    the process's intra-op thread count in the calling thread (see :class:`CPUWorkers`). With a
    compiled inner loop the last batch is padded to the full batch size so the compiler sees
    one shape per pyramid level.
    """
    device = torch.device(device)
    opts = opts or options_for(device)
    first = torch.as_tensor(first).to(device)  # (P, H, W), uint8 or float32: converted per batch
    second = torch.as_tensor(second).to(device)
    n_pairs = first.shape[0]
    out = np.empty((n_pairs, 2, *first.shape[1:]), dtype=np.float32)
    cap = opts.batch_pairs
    if device.type != "cpu":
        n_workers = 1
    else:
        n_workers = workers.size if workers is not None else max(1, threads or torch.get_num_threads())
        if n_workers == 1:  # cache-sized batches (see TVL1Options.single_worker_pairs)
            cap = min(cap, opts.single_worker_pairs)
    bs = min(cap, -(-n_pairs // n_workers))
    chunks = [(s, min(s + bs, n_pairs)) for s in range(0, n_pairs, bs)]
    pad_last = _use_compile(device, opts) and len(chunks) > 1

    def run(chunk: tuple[int, int]) -> None:
        start, stop = chunk
        i0, i1 = first[start:stop].float(), second[start:stop].float()  # (b, H, W) each
        if pad_last and stop - start < bs:  # repeat the last pair up to the compiled shape
            pad = bs - (stop - start)
            i0 = torch.cat([i0, i0[-1:].expand(pad, -1, -1)])
            i1 = torch.cat([i1, i1[-1:].expand(pad, -1, -1)])
        flow = tvl1_pairs(i0, i1, opts)  # (b, 2, H, W)
        out[start:stop] = flow[: stop - start].cpu().numpy()

    if device.type != "cpu":
        for chunk in chunks:
            run(chunk)
        return out
    if workers is not None:
        workers.map(run, chunks)
        return out
    own = CPUWorkers(min(n_workers, len(chunks)))
    try:
        own.map(run, chunks)
    finally:
        own.close()
    return out


__all__ = [
    "CUDA_OPTIONS",
    "CPUWorkers",
    "TVL1Options",
    "level_sizes",
    "options_for",
    "tvl1_pairs",
    "tvl1_torch_pairs",
]
