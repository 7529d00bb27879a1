"""Two-stream features: decode -> TV-L1 flow -> per-stream 3D ResNet, streamed.

``FeatureExtractor(...).extract(path) -> Features``: ``array float32 (T, D)`` (RGB stream's
``dim`` columns first, then flow's), ``times float64 (T,)`` seconds (the centre of each feature's
receptive field: ``(centre_offset + j * feature_stride) / fps``; 0.4 j s for r3d_18) and a
:class:`~tal_pipeline.featio.FeatureMeta`. ``T = ceil(N / feature_stride)`` for ``N`` decoded
frames: the last partial step is kept. With flow, ``meta.motion`` is the per-step camera-motion
descriptor of the same TV-L1 fields (``global_motion``: a robust fit per field, averaged per step).

Streaming: frames arrive in chunks; flow keeps the previous chunk's last frame so fields are
continuous across chunks (only the video's last frame repeats the previous field); each stream's
backbone runs through :class:`~tal_pipeline.backbone.StreamPipeline` (halo chunks). Memory is
bounded by the chunk sizes whatever the video's length (plus the (T, D) output itself).
Decoding and flow (:class:`~tal_pipeline.flow.stream.FlowStream`) run on a background thread
(:func:`~tal_pipeline.prefetch.prefetch`), overlapped with the backbone; the backbone's
BatchNorms are folded into its convolutions (:func:`~tal_pipeline.backbone.fold_batchnorm`).

Precision (``precision="auto"``, :func:`auto_precision`): fp16 autocast on CUDA (with several
chunks per forward); bf16 autocast on CPUs that compute bf16 in hardware (AVX512_BF16 or AMX on
x86, the BF16 extension on Arm), where it is several times faster than fp32 and moves features
by ~3e-3 relative; fp32 on other CPUs, where oneDNN would emulate bf16 (slower than fp32). The
precision used is recorded in the meta; a detector accepts features of any precision made with
its weights.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from tal_pipeline.backbone import (
    BACKBONES,
    SPECS,
    StreamNet,
    StreamPipeline,
    build_stream,
    fold_batchnorm,
)
from tal_pipeline.errors import InputError, VideoTooShortError
from tal_pipeline.featio import FeatureMeta
from tal_pipeline.flow import flow_version
from tal_pipeline.flow.stream import FlowStream
from tal_pipeline.global_motion import fit_fields, step_descriptor
from tal_pipeline.prefetch import prefetch
from tal_pipeline.transforms import FPS
from tal_pipeline.weights import LoadedWeights, flow_state_dict, load_weights

STREAMS = ("rgb", "flow")  # in output order: RGB columns first
STREAM_CHANNELS = {"rgb": 3, "flow": 2}  # input channels per stream
FLOW_BACKENDS = ("opencv", "torch")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def onednn_runs_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions on this CPU at all, natively or emulated: it needs
    AVX-512 BW/VL/DQ or AVX-NE-CONVERT, and raises on AVX2-only CPUs (Zen 3)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without these probes: assume not
        return False


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions on this CPU in hardware, not emulated.

    Asks torch, not the CPU's name. On x86 oneDNN calls bf16 "supported" on any AVX-512 CPU and
    emulates it where the AVX512_BF16 or AMX instructions are missing (slower than fp32 there),
    so those two are checked as well; on Arm, oneDNN's check is already the BF16 extension.
    """
    import platform

    if not onednn_runs_bf16():
        return False
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86"):
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    return True


def auto_precision(device: str | torch.device) -> str:
    """``precision="auto"``: "fp16" on CUDA, "bf16" on a CPU with native bf16, else "fp32"."""
    if torch.device(device).type == "cuda":
        return "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


@dataclass(frozen=True)
class ExtractOptions:
    backbone: str = "r3d_18"  # "r3d_18" (512-d per stream), "r3d_18_grid" (2560) or "i3d_r50" (2048, extra)
    weights: str = "kinetics400"  # "kinetics400", "seeded" or a path to a state dict
    streams: tuple[str, ...] = STREAMS  # subset of ("rgb", "flow"), output in that order
    flow_backend: str = "torch"  # TV-L1: "torch" (batched, faster; BENCHMARKS.md) or "opencv" (reference)
    device: str = "cpu"  # torch device for the backbone (and the torch flow backend)
    chunk_frames: int = 64  # core chunk of the first backbone stage, frames (later stages: 2x)
    batch_chunks: int = 0  # chunks per forward; 0: 1 on CPU, 4 on CUDA
    precision: str = "auto"  # "auto" (auto_precision: fp16 CUDA, bf16 native-bf16 CPU, else fp32)
    channels_last: bool = True  # channels_last_3d memory format (faster with oneDNN and cuDNN)
    decode_chunk: int = 64  # frames per decoded chunk (times batch_chunks on CUDA)
    size: int = 0  # frame side in pixels; 0: the weights' crop (112 for r3d_18). Tests/ablation
    check_hash: bool = True  # verify the downloaded/placed Kinetics file's sha256 prefix
    progress: bool = True  # download progress bar (kinetics400, first use only)


@dataclass(frozen=True)
class Features:
    array: np.ndarray  # float32 (T, D)
    times: np.ndarray  # float64 (T,), seconds: centre of each feature
    meta: FeatureMeta = field(repr=False)

    def __len__(self) -> int:
        return len(self.array)


class FeatureExtractor:
    """Builds the stream trunks once; ``extract`` / ``extract_frames`` run them on videos.

    ``backbone_id`` and ``weights_sha256`` identify the features (the detector checks them).
    """

    def __init__(self, **kwargs):
        opts = ExtractOptions(**kwargs)
        streams = tuple(s for s in STREAMS if s in set(opts.streams))
        if not streams or len(streams) != len(set(opts.streams)):
            raise InputError(f"streams must be a non-empty subset of rgb, flow, got {opts.streams!r}")
        if opts.backbone not in BACKBONES:
            raise InputError(f"unknown backbone {opts.backbone!r}; choose from {', '.join(BACKBONES)}")
        if opts.flow_backend not in FLOW_BACKENDS:
            raise InputError(f"unknown flow backend {opts.flow_backend!r}; choose opencv or torch")
        if opts.precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}")
        if opts.chunk_frames < 1 or opts.decode_chunk < 1 or opts.batch_chunks < 0 or opts.size < 0:
            raise InputError("chunk_frames and decode_chunk must be >= 1, batch_chunks >= 0")
        device = torch.device(opts.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {opts.device!r}: CUDA is not available here")
        cuda = device.type == "cuda"
        precision = opts.precision if opts.precision != "auto" else auto_precision(device)
        if not cuda and precision == "bf16" and not onednn_runs_bf16():  # refused now, not per video
            raise InputError("precision bf16: this CPU has no bf16 convolutions (they need AVX-512 BW/VL/DQ "
                             "or AVX-NE-CONVERT); use --precision auto or fp32")
        batch = opts.batch_chunks or (4 if cuda else 1)
        self.options = replace(opts, streams=streams, precision=precision, batch_chunks=batch)
        self.device = device
        self.spec = SPECS[opts.backbone]
        loaded = load_weights(self.spec.weights_of, opts.weights, check_hash=opts.check_hash, progress=opts.progress)
        self.transform = loaded.spec.transform
        shared = {k: self._prepare(v) for k, v in loaded.state_dict.items()}
        self._seeded = loaded.spec.id == "seeded"  # flow stem: own seeded filters (weights.py)
        self._folded: dict = {}  # BatchNorm-folded weights per low precision, shared by the streams
        self.nets = {s: self._build(s, shared) for s in streams}
        # TV-L1's CPU threads, started here, in the thread that builds the extractor and owns
        # torch's settings, not on the prefetch thread that runs the flow (CPUWorkers says why)
        self._flow_workers = None
        if "flow" in streams and opts.flow_backend == "torch" and device.type == "cpu":
            from tal_pipeline.flow.tvl1_torch import CPUWorkers

            self._flow_workers = CPUWorkers()
            # idle threads end with the extractor (no wait: the collector may run on any thread)
            weakref.finalize(self, self._flow_workers.close, False)
        # keep the identity, not a second copy of the tensors (the nets hold them)
        self.loaded: LoadedWeights = replace(loaded, state_dict={})
        # called with each batch of raw flow fields (float32 (n, 2, S, S) px, the fields
        # global_motion.fit_fields gets, in order): benchmarks/camera_check.py caches their block
        # medians to compare fits without re-extracting. Never changes the features.
        self.field_hook: Callable[[np.ndarray], None] | None = None

    # ---------------------------------------------------------------- identity

    @property
    def backbone_id(self) -> str:
        return self.spec.id

    @property
    def weights_sha256(self) -> str:
        """Checksum of the trunk tensors (``weights.state_checksum``), RGB stem."""
        return self.loaded.sha256

    @property
    def dim(self) -> int:
        """D = per-stream dim x number of streams."""
        return self.spec.dim * len(self.options.streams)

    @property
    def feature_stride(self) -> int:
        """Frames per feature step."""
        return self.spec.feature_stride

    # ---------------------------------------------------------------- building

    def _prepare(self, t: torch.Tensor) -> torch.Tensor:
        """A weight on the device, in the memory format the forward uses (no copy if already)."""
        t = t.to(self.device)
        if t.ndim == 5:
            fmt = torch.channels_last_3d if self.options.channels_last else torch.contiguous_format
            t = t.contiguous(memory_format=fmt)
        return t

    def _build(self, stream: str, shared: dict[str, torch.Tensor]) -> StreamNet:
        """The stream's trunk, its tensors *shared* with the other stream's (frozen weights:
        the flow stream differs only by its stem), so the weights sit in memory once."""
        channels = STREAM_CHANNELS[stream]
        net = build_stream(self.spec.id, channels, device="meta")
        sd = shared if channels == 3 else flow_state_dict(
            shared, self.spec.stem_key, channels, independent=self._seeded
        )
        if channels != 3:
            sd[self.spec.stem_key] = self._prepare(sd[self.spec.stem_key])
        net.body.load_state_dict(sd, strict=True, assign=True)
        net = net.eval().requires_grad_(False)
        fold_batchnorm(net.body, self._folded)
        return net

    def _wrap(self, module: torch.nn.Module):
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.options.precision]
        device_type = self.device.type
        channels_last = self.options.channels_last

        def run(x: torch.Tensor) -> torch.Tensor:  # (B, C, t, ...) -> (B, C', t', ...)
            if channels_last and x.ndim == 5:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            if dtype is None:
                return module(x)
            with torch.autocast(device_type, dtype=dtype):
                return module(x)

        return run

    # ---------------------------------------------------------------- public entries

    def extract(self, path: str | os.PathLike) -> Features:
        """Features of the video file at ``path`` (raises VideoDecodeError for bad files, and
        its subclass VideoTooShortError for a video of fewer frames than one feature step)."""
        from tal_pipeline.decode import decode_video, probe_video

        info = probe_video(path)
        chunk = self.options.decode_chunk * (self.options.batch_chunks if self.device.type == "cuda" else 1)
        size = self.options.size or self.transform.crop
        chunks = decode_video(path, FPS, size, chunk_size=chunk, spec=self.transform)
        return self._extract(self._long_enough(chunks, path), str(path), info.duration)

    def _long_enough(self, chunks: Iterable, path) -> Iterator[tuple[np.ndarray, None]]:
        """(frames, None) per decoded chunk; at the end, VideoTooShortError (on the prefetch
        thread, re-raised by the consumer before the backbone's last step) if the whole video
        gave fewer than ``feature_stride`` frames: not one full feature step."""
        n = 0
        for c in chunks:
            n += len(c.frames)
            yield c.frames, None
        if n < self.feature_stride:
            raise VideoTooShortError(path, n, FPS, self.feature_stride)

    def extract_frames(
        self,
        frames: np.ndarray | Iterable[np.ndarray],
        flow: np.ndarray | None = None,
        *,
        video: str = "<frames>",
        duration: float | None = None,
    ) -> Features:
        """Features of decoded frames: ``uint8 (N, S, S, 3)`` RGB at 10 fps (or an iterable of
        such chunks). ``flow``: optional precomputed ``float32 (N, 2, S, S)`` pixels (field k from
        frame k to k+1, the last repeated), which skips TV-L1 (tests)."""
        if isinstance(frames, np.ndarray):
            step = self.options.decode_chunk
            pieces: Iterable[np.ndarray] = (frames[i : i + step] for i in range(0, len(frames), step))
        else:
            pieces = frames
        if flow is None:
            items = ((f, None) for f in pieces)
        else:
            items = _with_flow(pieces, np.asarray(flow, dtype=np.float32))
        return self._extract(items, video, duration)

    # ---------------------------------------------------------------- the loop

    def _extract(
        self, items: Iterable[tuple[np.ndarray, np.ndarray | None]], video: str, duration: float | None
    ) -> Features:
        streams = self.options.streams
        chunks = self._stage_chunks()
        pipes = {s: StreamPipeline(self.nets[s], chunks, self.options.batch_chunks, self._wrap) for s in streams}
        outs: dict[str, list[torch.Tensor]] = {s: [] for s in streams}
        fits: list[np.ndarray] = []  # per flow field: global_motion.fit_fields rows (n, K)
        n_frames = 0
        with torch.inference_mode():
            for rgb, flow in prefetch(self._inputs(items)):
                n_frames += 0 if rgb is None else len(rgb)
                if "rgb" in pipes and rgb is not None and len(rgb):
                    _keep(outs["rgb"], pipes["rgb"].push(self._rgb_tensor(rgb)))
                if "flow" in pipes and flow is not None and len(flow):
                    _keep(outs["flow"], pipes["flow"].push(self._flow_tensor(flow)))
                    fits.append(fit_fields(flow))  # raw pixels, before the +-20 px clip
                    if self.field_hook is not None:
                        self.field_hook(flow)
            for s in streams:
                _keep(outs[s], pipes[s].finish())
        if n_frames == 0:
            raise InputError(f"{video}: no frames")
        per_stream = []
        for s in streams:
            y = torch.cat(outs[s], dim=1) if outs[s] else torch.zeros(self.spec.dim, 0)
            per_stream.append(y.float().cpu().numpy().T)  # (dim, T) -> (T, dim)
        lengths = {len(a) for a in per_stream}
        expected = -(-n_frames // self.spec.feature_stride)
        if lengths != {expected}:
            raise RuntimeError(f"stream lengths {lengths} != ceil({n_frames} / stride) = {expected}")
        array = np.ascontiguousarray(np.concatenate(per_stream, axis=1), dtype=np.float32)
        step = self.spec.feature_stride / FPS
        t0 = self.spec.centre_offset / FPS
        meta = FeatureMeta(
            video=video,
            duration=float(duration) if duration is not None else n_frames / FPS,
            fps=FPS,
            feature_stride=self.spec.feature_stride,
            t0=t0,
            step=step,
            backbone=self.spec.id,
            weights=self.loaded.label,
            streams=streams,
            dim=array.shape[1],
            num_features=array.shape[0],
            motion=step_descriptor(np.concatenate(fits), array.shape[0], FPS, t0, step) if fits else None,
            extra={
                "num_frames": n_frames,
                "receptive_field_frames": self.spec.receptive_field,
                "flow_backend": self.options.flow_backend if "flow" in streams else None,
                "flow_version": flow_version(streams, self.options.flow_backend),
                "precision": self.options.precision,
                "size": int(self.options.size or self.transform.crop),
            },
        )
        return Features(array, meta.times(), meta)

    def _stage_chunks(self) -> list[int]:
        """Per backbone stage: ``chunk_frames`` while the stage's input is at the full frame
        rate (the largest activations), twice that after (smaller halo share, little memory)."""
        c, jump, out = self.options.chunk_frames, 1, []
        for _, spec in self.nets[self.options.streams[0]].stages:
            out.append(c if jump == 1 else 2 * c)
            jump *= spec.stride
        return out

    def _inputs(
        self, items: Iterable[tuple[np.ndarray, np.ndarray | None]]
    ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(RGB chunk, flow fields for the frames whose successor is known); runs on the
        prefetch thread. Flow is continuous across chunks; the last frame repeats the last field."""
        need_flow = "flow" in self.options.streams
        flows = FlowStream(self.options.flow_backend, self.options.device, self._flow_workers) if need_flow else None
        for rgb, given in items:
            rgb = np.asarray(rgb)
            if rgb.dtype != np.uint8 or rgb.ndim != 4 or rgb.shape[-1] != 3:
                raise InputError(f"frames must be uint8 (N, H, W, 3), got {rgb.dtype} {rgb.shape}")
            if not need_flow:
                yield rgb, None
            elif given is not None:
                yield rgb, given
            else:
                yield rgb, flows.push(rgb)
        if flows is not None:
            yield np.zeros((0, 1, 1, 3), np.uint8), flows.finish()

    def _rgb_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        """uint8 (n, H, W, 3) -> float32 (3, n, H, W), normalised with the weights' mean/std."""
        x = torch.from_numpy(rgb).to(self.device, non_blocking=True)
        x = x.permute(3, 0, 1, 2).float().div_(255.0)  # (3, n, H, W), [0, 1]
        mean = torch.tensor(self.transform.mean, device=self.device).view(3, 1, 1, 1)
        std = torch.tensor(self.transform.std, device=self.device).view(3, 1, 1, 1)
        return x.sub_(mean).div_(std)

    def _flow_tensor(self, flow: np.ndarray) -> torch.Tensor:
        """float32 (n, 2, H, W) pixels -> (2, n, H, W), clipped to +-20 px and divided by 20."""
        from tal_pipeline.flow import encode_flow

        x = torch.from_numpy(np.ascontiguousarray(encode_flow(flow), dtype=np.float32))
        return x.to(self.device, non_blocking=True).permute(1, 0, 2, 3)


def _keep(out: list[torch.Tensor], y: torch.Tensor | None) -> None:
    if y is not None and y.shape[1]:
        out.append(y)


def _with_flow(pieces: Iterable[np.ndarray], flow: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    i = 0
    for rgb in pieces:
        n = len(rgb)
        if flow.shape[0] < i + n or flow.ndim != 4 or flow.shape[1] != 2:
            raise InputError(f"flow must be float32 (N, 2, H, W) matching the frames, got {flow.shape}")
        yield rgb, flow[i : i + n]
        i += n
    if flow.shape[0] != i:
        raise InputError(f"flow has {flow.shape[0]} fields for {i} frames")
