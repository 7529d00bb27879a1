"""Backbone weights as data: which file or seed, its checksum, the input transform it expects.

Three kinds, by the ``weights`` string (``tal extract --weights``):

- ``kinetics400`` (default): the Kinetics-400 checkpoint, through the library's own API —
  torchvision ``R3D_18_Weights.KINETICS400_V1.get_state_dict`` for r3d_18, pytorchvideo's
  hub loader for i3d_r50. Both cache the file in torch hub's ``checkpoints`` folder
  (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub/checkpoints``). Offline and
  without that file, one :class:`NotAvailableError` line says which file to place where (or to
  pass ``--weights seeded``). Never a silent fallback. The file's sha256 must start with the
  hash prefix in its name (torch hub's convention) unless ``check_hash=False``.
- ``seeded``: every tensor drawn from numpy's PCG64 bit stream (whose output numpy guarantees
  across versions) with a fixed seed, converted to floats by our own arithmetic, so every
  machine builds identical weights without a download; the tensor checksum is a constant here
  and verified on load. Used by the tests and the demo detector. Init: convs uniform with the
  variance of Kaiming-normal (``2 / fan_in``), the second conv of each residual block scaled by
  ``RESIDUAL_SCALE`` so the residual sums do not grow through the 8 blocks; BatchNorm weight 1,
  bias 0, running mean 0, var 1 (without the residual scale the sums' variance would grow
  with every block). Generating and verifying them is most of a short run's
  start-up, so the verified tensors are kept in the user's cache folder
  (``$XDG_CACHE_HOME/tal-pipeline``, by default ``~/.cache/tal-pipeline``; :func:`cache_dir`) and
  read back from there, the file's own sha256 checked on every read; a missing, corrupt or
  foreign file is rebuilt (written atomically), an unwritable folder only costs the speed.
- a path to a local torchvision-format (or pytorchvideo-format for i3d_r50) state dict, read with
  ``torch.load(weights_only=True)`` and checked key by key, shape by shape.

Every loaded set is identified by :func:`state_checksum` (sha256 over the trunk's tensors in
sorted key order), which the feature meta and the detector's checkpoint record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from tal_pipeline.errors import InputError, NotAvailableError, TalError
from tal_pipeline.transforms import KINETICS_R3D, VideoTransformSpec

log = logging.getLogger(__name__)

SEED = 20240611  # PCG64 seed of the ``seeded`` weights
CACHE_FORMAT = "tal-pipeline seeded weights 2"  # first field of a cache file's header
RESIDUAL_SCALE = 0.5  # multiplies each residual block's last conv in ``seeded`` (keeps scale)
SEEDED_SHA256 = {  # state_checksum of the seeded trunk, per backbone (verified at load)
    "r3d_18": "35c8acf1e59fe6e9ddbe40cb3ba6cb037ab3b952cb88140b82bf9df0d0a33c72",
    "i3d_r50": "0b2fdba8fca4fc93c05bd7b9d43a478bd6b030495adf887aef26b9308a69894c",  # pytorchvideo 0.1.5
}

# pytorchvideo's Kinetics-400 I3D (its hub default); mean/std 0.45/0.225 on [0, 1], 224 crop
I3D_TRANSFORM = VideoTransformSpec(
    resize_hw=(256, 341), crop=224, mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225)
)
_HASH_IN_NAME = re.compile(r"-([a-f0-9]*)\.")  # torch hub: "<name>-<sha256 prefix>.<ext>"


@dataclass(frozen=True)
class WeightsSpec:
    id: str  # "kinetics400", "seeded" or "file"
    backbone: str  # "r3d_18" or "i3d_r50"
    source: str  # URL, "pcg64:<seed>", or the local path
    sha256: str | None  # of the file: a prefix (torch hub name) or full; None for seeded
    transform: VideoTransformSpec  # resize, crop, mean/std the weights expect
    meta: Mapping = field(default_factory=dict)  # provenance (dataset, recipe, ...)

    @property
    def file_name(self) -> str:
        return self.source.rsplit("/", 1)[-1]


WEIGHTS = {
    ("r3d_18", "kinetics400"): WeightsSpec(
        "kinetics400",
        "r3d_18",
        "https://download.pytorch.org/models/r3d_18-b3b3357e.pth",
        "b3b3357e",
        KINETICS_R3D,
        {"dataset": "Kinetics-400", "api": "torchvision R3D_18_Weights.KINETICS400_V1"},
    ),
    ("r3d_18", "seeded"): WeightsSpec(
        "seeded", "r3d_18", f"pcg64:{SEED}", None, KINETICS_R3D, {"init": "seeded, not trained"}
    ),
    ("i3d_r50", "kinetics400"): WeightsSpec(
        "kinetics400",
        "i3d_r50",
        "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/I3D_8x8_R50.pyth",
        None,
        I3D_TRANSFORM,
        {"dataset": "Kinetics-400", "api": "pytorchvideo.models.hub.i3d_r50(pretrained=True)"},
    ),
    ("i3d_r50", "seeded"): WeightsSpec(
        "seeded", "i3d_r50", f"pcg64:{SEED}", None, I3D_TRANSFORM, {"init": "seeded, not trained"}
    ),
}


@dataclass(frozen=True)
class LoadedWeights:
    spec: WeightsSpec
    state_dict: dict[str, torch.Tensor]  # the trunk's tensors (RGB stem), original key names
    sha256: str  # state_checksum(state_dict)

    @property
    def label(self) -> str:
        """``<id>:sha256:<checksum>`` (``featio.WeightsLabel``): what feature meta and
        checkpoints record."""
        from tal_pipeline.featio import WeightsLabel

        return str(WeightsLabel(self.spec.id, self.sha256))


def resolve(backbone: str, weights: str | os.PathLike) -> WeightsSpec:
    """The spec for ``weights`` ("kinetics400", "seeded" or a path) of ``backbone``."""
    name = str(weights)
    if (backbone, name) in WEIGHTS:
        return WEIGHTS[(backbone, name)]
    path = Path(name).expanduser()
    if path.suffix or os.sep in name or path.exists():
        transform = WEIGHTS[(backbone, "seeded")].transform if (backbone, "seeded") in WEIGHTS else KINETICS_R3D
        return WeightsSpec("file", backbone, str(path), None, transform, {"path": str(path)})
    known = sorted({w for b, w in WEIGHTS if b == backbone})
    raise InputError(f"unknown weights {name!r} for {backbone}: use {', '.join(known)} or a .pth path")


def load_weights(
    backbone: str,
    weights: str | os.PathLike,
    *,
    check_hash: bool = True,
    progress: bool = True,
) -> LoadedWeights:
    """Resolve and load ``weights`` for ``backbone``: trunk tensors + checksum. Raises TalError."""
    spec = resolve(backbone, weights)
    from tal_pipeline.backbone import build_stream  # the trunk's expected keys and shapes

    expected = {k: v for k, v in build_stream(backbone, 3, device="meta").body.state_dict().items()}
    if spec.id == "seeded":
        sd = dict(_seeded_cached(backbone))  # shared, read-only tensors: no 130 MB copy
        pinned = SEEDED_SHA256.get(backbone)
        if pinned is not None:  # verified against the pinned checksum when built or read
            return LoadedWeights(spec, _check_keys(sd, expected, spec, finite=False), pinned)
    elif spec.id == "kinetics400":
        sd = _download(spec, check_hash=check_hash, progress=progress)
    else:
        sd = _read_file(Path(spec.source))
    sd = _check_keys(sd, expected, spec)
    return LoadedWeights(spec, sd, state_checksum(sd))


def hub_checkpoint_path(spec: WeightsSpec) -> Path:
    """Where torch hub caches (and looks for) ``spec``'s file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / spec.file_name


def _download(spec: WeightsSpec, *, check_hash: bool, progress: bool) -> dict[str, torch.Tensor]:
    target = hub_checkpoint_path(spec)
    try:
        if spec.backbone == "r3d_18":
            from torchvision.models.video import R3D_18_Weights

            tv = R3D_18_Weights.KINETICS400_V1
            assert tv.url == spec.source, "torchvision's URL changed; update WEIGHTS"
            sd = tv.get_state_dict(progress=progress)
        else:
            from tal_pipeline.backbone import _pytorchvideo_i3d

            sd = _pytorchvideo_i3d(pretrained=True).state_dict()
    except (urllib.error.URLError, OSError, ConnectionError) as err:
        if target.exists():
            raise TalError(f"{target}: cannot read the {spec.backbone} {spec.id} weights ({err})") from None
        raise NotAvailableError(
            f"cannot download the {spec.backbone} {spec.id} weights ({_short(err)}): "
            f"place {spec.source} at {target} (or set TORCH_HOME), or pass --weights seeded"
        ) from None
    if check_hash and spec.sha256 and target.exists():
        digest = file_sha256(target)
        if not digest.startswith(spec.sha256):
            raise TalError(
                f"{target}: sha256 {digest[:16]}... does not match the {spec.backbone} {spec.id} "
                f"weights (expected {spec.sha256}...); delete it and place the file from {spec.source}"
            )
    return sd


def _short(err: BaseException) -> str:
    reason = getattr(err, "reason", None)
    return str(reason if reason is not None else err) or type(err).__name__


def _read_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise InputError(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- pickle, zip and torch errors vary by version
        raise InputError(f"{path}: not a readable state dict ({_short(err)})") from None
    if isinstance(obj, dict) and "model_state" in obj and isinstance(obj["model_state"], dict):
        obj = obj["model_state"]  # pytorchvideo / pycls checkpoints
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InputError(f"{path}: not a state dict (a mapping of names to tensors)")
    return obj


def _check_keys(
    sd: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], spec: WeightsSpec, finite: bool = True
) -> dict[str, torch.Tensor]:
    """Keep the trunk's keys; every expected key present with its shape, as float32 on CPU;
    ``finite``: also refuse NaN/inf (skipped for tensors whose checksum is already verified)."""
    where = spec.source if spec.id == "file" else f"{spec.backbone} {spec.id}"
    missing = [k for k in expected if k not in sd]
    if missing:
        raise InputError(
            f"{where}: not {spec.backbone} weights: {len(missing)} missing keys (e.g. {missing[0]})"
        )
    bad = [k for k in expected if tuple(sd[k].shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise InputError(
            f"{where}: {len(bad)} tensors have the wrong shape, e.g. {k}: "
            f"{tuple(sd[k].shape)} instead of {tuple(expected[k].shape)}"
        )
    out = {}
    for k, ref in expected.items():
        out[k] = sd[k].detach().to("cpu").to(ref.dtype)  # no copy when already right
        if finite and out[k].is_floating_point() and not torch.isfinite(out[k]).all():
            raise InputError(f"{where}: tensor {k} has NaN or infinite values")
    return out


def state_checksum(sd: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the floating-point tensors, in sorted key order: name, shape, float32 bytes.

    Integer buffers (BatchNorm's ``num_batches_tracked``) do not affect outputs and are skipped.
    """
    h = hashlib.sha256()
    for k in sorted(sd):
        v = sd[k]
        if not v.is_floating_point():
            continue
        h.update(k.encode() + b"\0" + repr(tuple(v.shape)).encode() + b"\0")
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().astype("<f4").tobytes())
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- seeded


def _uniform(rng: np.random.Generator, n: int) -> np.ndarray:
    """float32 (n,) in [-1, 1) from the raw PCG64 bit stream; every step is exact in float32."""
    raw = rng.bit_generator.random_raw(n)  # uint64 (n,)
    u = (raw >> np.uint64(40)).astype(np.float32)  # top 24 bits: integers < 2**24, exact
    u *= np.float32(2.0**-23)  # [0, 2), exact (power of two)
    u -= np.float32(1.0)  # [-1, 1), exact (multiples of 2**-23)
    return u


def _is_last_conv_of_block(key: str, backbone: str) -> bool:
    from tal_pipeline.backbone import SPECS

    return key.endswith(SPECS[backbone].last_conv)


def _seeded_tensors(backbone: str) -> dict[str, torch.Tensor]:
    from tal_pipeline.backbone import build_stream

    template = build_stream(backbone, 3, device="meta").body.state_dict()
    rng = np.random.Generator(np.random.PCG64(SEED))
    out: dict[str, torch.Tensor] = {}
    for key in sorted(template):
        ref = template[key]
        shape = tuple(ref.shape)
        if not ref.is_floating_point():
            out[key] = torch.zeros(shape, dtype=ref.dtype)
            continue
        leaf = key.rsplit(".", 1)[-1]
        if ref.ndim >= 2 and leaf == "weight":  # conv (or linear): Kaiming variance 2 / fan_in
            fan_in = int(np.prod(shape[1:]))
            bound = np.sqrt(3.0) * np.sqrt(2.0 / fan_in)  # uniform(-b, b) has variance b^2 / 3
            if _is_last_conv_of_block(key, backbone):
                bound *= RESIDUAL_SCALE
            values = _uniform(rng, int(np.prod(shape)))
            values *= np.float32(bound)  # one correctly rounded float32 product per value
            values = values.reshape(shape)
            out[key] = torch.from_numpy(values).contiguous(memory_format=torch.channels_last_3d)
            continue  # (stored channels_last: the layout the extractor runs in, no copy there)
        elif leaf in ("weight", "running_var"):  # BatchNorm scale, running variance
            values = np.ones(shape, np.float32)
        else:  # BatchNorm bias, running mean, conv bias
            values = np.zeros(shape, np.float32)
        out[key] = torch.from_numpy(values)
    return out


@lru_cache(maxsize=1)
def _seeded_cached(backbone: str) -> tuple[tuple[str, torch.Tensor], ...]:
    """Built once per process (tests and the demo build many extractors)."""
    return tuple(load_seeded_tensors(backbone).items())


def load_seeded_tensors(backbone: str) -> dict[str, torch.Tensor]:
    """The seeded trunk: from the user's cache file when it verifies, else generated (~1 s),
    verified against ``SEEDED_SHA256`` and written to the cache for the next process."""
    expected = SEEDED_SHA256.get(backbone)
    path = seeded_cache_path(backbone)
    if path is not None:
        sd = read_seeded_cache(path, backbone, expected)
        if sd is not None:
            return sd
    sd = _seeded_tensors(backbone)
    got = state_checksum(sd)
    if expected is not None and got != expected:
        raise TalError(
            f"seeded {backbone} weights have checksum {got[:16]}..., not {expected[:16]}...: "
            "this machine builds different numbers (please report it)"
        )
    if path is not None:
        write_seeded_cache(path, backbone, sd, got)
    return sd


def cache_dir() -> Path:
    """The user's cache folder for tal-pipeline: ``$XDG_CACHE_HOME/tal-pipeline``, else
    ``~/.cache/tal-pipeline``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tal-pipeline"


def seeded_cache_path(backbone: str) -> Path | None:
    """Where the seeded ``backbone``'s tensors are cached (named by their checksum), or None
    for a backbone without a pinned checksum (never cached: nothing to verify against)."""
    expected = SEEDED_SHA256.get(backbone)
    if expected is None:
        return None
    return cache_dir() / f"seeded-{backbone}-{expected[:16]}.bin"


# A cache file: 8 bytes little-endian header length, the header (JSON: format, backbone, state
# checksum, one entry per tensor, and the sha256 of the entries' JSON followed by the payload,
# so a damaged layout is caught like damaged bytes), zero padding to a multiple of 64 bytes, then
# the tensors' bytes in memory order (channels_last for the convs, as built), one after another.
_ALIGN = 64  # bytes


def write_seeded_cache(path: Path, backbone: str, sd: Mapping[str, torch.Tensor], state_sha256: str) -> bool:
    """Write ``sd`` (already verified: ``state_sha256``) to ``path`` atomically (temp + rename).

    Returns False (and logs why) when the folder is not writable: the cache is only for speed.
    """
    entries, chunks, offset = [], [], 0
    for key, t in sd.items():
        channels_last = t.ndim == 5 and not t.is_contiguous() and t.is_contiguous(
            memory_format=torch.channels_last_3d
        )
        mem = t.permute(0, 2, 3, 4, 1) if channels_last else t.contiguous()  # memory order, no copy
        data = mem.numpy().tobytes()
        entries.append({"key": key, "shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch."),
                        "channels_last": channels_last, "offset": offset, "nbytes": len(data)})
        chunks.append(data)
        offset += len(data)
    payload_sha = hashlib.sha256(json.dumps(entries).encode())  # the layout, then the bytes
    for c in chunks:
        payload_sha.update(c)
    header = json.dumps({"format": CACHE_FORMAT, "backbone": backbone, "state_sha256": state_sha256,
                         "payload_sha256": payload_sha.hexdigest(), "entries": entries}).encode()
    pad = -(8 + len(header)) % _ALIGN
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(len(header).to_bytes(8, "little") + header + b"\0" * pad)
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return True
    except OSError as err:
        log.debug("seeded weights cache %s not written: %s", path, err)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False


def _payload_digest(entries: list, payload: memoryview) -> str:
    h = hashlib.sha256(json.dumps(entries).encode())
    h.update(payload)
    return h.hexdigest()


def read_seeded_cache(path: Path, backbone: str, state_sha256: str) -> dict[str, torch.Tensor] | None:
    """The tensors of a cache file, or None if it is missing, unreadable, corrupt (its payload's
    sha256 differs from its header's) or made for other weights. One read, one hash pass; the
    tensors are views of the file's bytes (no copy)."""
    try:
        with open(path, "rb") as f:
            buf = bytearray(os.fstat(f.fileno()).st_size)  # read straight into it: no second copy
            if f.readinto(buf) != len(buf):
                return None
    except OSError:
        return None
    try:
        n = int.from_bytes(buf[:8], "little")
        header = json.loads(bytes(buf[8 : 8 + n]))
        start = 8 + n + (-(8 + n) % _ALIGN)
        payload = memoryview(buf)[start:]
        ok = (
            header["format"] == CACHE_FORMAT
            and header["backbone"] == backbone
            and header["state_sha256"] == state_sha256
            and _payload_digest(header["entries"], payload) == header["payload_sha256"]
        )
        if not ok:
            raise ValueError("checksum or identity differs")
        out: dict[str, torch.Tensor] = {}
        for e in header["entries"]:
            shape, dtype = tuple(e["shape"]), getattr(torch, e["dtype"])
            count = int(np.prod(shape, dtype=np.int64))
            if e["offset"] + e["nbytes"] > len(payload) or count * dtype.itemsize != e["nbytes"]:
                raise ValueError(f"entry {e['key']} out of bounds")
            flat = torch.frombuffer(buf, dtype=dtype, count=count, offset=start + e["offset"])
            if e["channels_last"]:  # memory order (N, D, H, W, C) -> (N, C, D, H, W) strides
                n_, c_, d_, h_, w_ = shape
                out[e["key"]] = flat.view(n_, d_, h_, w_, c_).permute(0, 4, 1, 2, 3)
            else:
                out[e["key"]] = flat.view(shape)
        return out
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as err:
        log.warning("%s: seeded weights cache is corrupt or foreign (%s); rebuilding it", path, err)
        return None


def seeded_state_dict(backbone: str = "r3d_18") -> dict[str, torch.Tensor]:
    """The seeded trunk state dict (RGB stem), checksum verified; a fresh copy each call."""
    return {k: v.clone() for k, v in _seeded_cached(backbone)}


def flow_state_dict(
    sd: Mapping[str, torch.Tensor], stem_key: str, channels: int = 2, *, independent: bool = False
) -> dict[str, torch.Tensor]:
    """The flow stream's trunk: the RGB trunk with a ``channels``-input stem.

    Pretrained weights (``independent=False``): cross-modality initialisation, the RGB stem
    averaged over its 3 input channels and repeated for each flow channel. Note what that means
    for a frozen backbone: every flow channel gets the same filters, so the stem sees only
    ``dx + dy`` (a pan right and a tilt down give the same features). Fine-tuning breaks the
    symmetry; frozen extraction keeps it.

    Seeded weights (``independent=True``): averaging random filters has no transfer to keep,
    and would make the flow stream blind to the motion's axis, so each flow channel takes its
    own seeded filters: the RGB stem's first ``channels`` input channels (independent draws of
    the seeded generator), scaled by sqrt(3 / channels) to keep the Kaiming variance of a
    ``channels``-input stem.

    ``stem_key``'s weight ``(O, 3, kt, kh, kw) -> (O, channels, kt, kh, kw)``; other tensors
    shared unchanged.
    """
    out = dict(sd)
    w = sd[stem_key]
    if independent:
        if channels > w.shape[1]:
            raise ValueError(f"{channels} flow channels from a {w.shape[1]}-channel stem")
        scale = float(np.sqrt(w.shape[1] / channels))
        out[stem_key] = (w[:, :channels] * scale).contiguous()
    else:
        out[stem_key] = w.mean(dim=1, keepdim=True).repeat(1, channels, 1, 1, 1).contiguous()
    return out
