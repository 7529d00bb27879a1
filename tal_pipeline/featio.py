"""Feature files: ``<id>.npy`` (float32 (T, D)) and ``<id>.json`` (:class:`FeatureMeta`).

The ``.npy`` alone is what ActionFormer-style trainers read; the ``.json`` carries time: feature i
is centred at ``t0 + i * step`` seconds; with flow, it also carries ``global_motion``, the
per-step camera-motion descriptor (``global_motion.COLUMNS``; ``FeatureMeta.motion``), which
older files lack and still load without. The ``.json`` is written last, so its presence (with a
matching shape) marks a complete pair: a run killed between the two writes is redone on resume.

Foreign, meta-less ``.npy`` files (e.g. the public THUMOS14 I3D features) load when the caller
gives ``fps`` (frames per second of the video the features came from) and ``feature_stride``
(frames per feature step): ``step = feature_stride / fps`` and, with ActionFormer's convention,
feature i covers a ``window_frames`` window starting at frame ``i * feature_stride``, so
``t0 = 0.5 * window_frames / fps``.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tal_pipeline.errors import InputError, loads_json

META_FORMAT = "tal-pipeline/features-1"
UNKNOWN = "unknown"  # backbone and weights of foreign features (no meta: we cannot tell)


@dataclass(frozen=True)
class WeightsLabel:
    """Which backbone weights made features: ``<id>:sha256:<checksum>`` in files and checkpoints.

    ``id``: "kinetics400", "seeded" or "file" (a local state dict); ``sha256``: the checksum of
    the trunk's tensors (``weights.state_checksum``), what identity really rests on.
    """

    id: str
    sha256: str

    def __str__(self) -> str:
        return f"{self.id}:sha256:{self.sha256}"

    @classmethod
    def parse(cls, label: str) -> WeightsLabel | None:
        """The label written by ``str()``; None for ``UNKNOWN`` or anything else."""
        wid, sep, checksum = str(label).partition(":sha256:")
        return cls(wid, checksum) if sep and wid and checksum else None


@dataclass(frozen=True)
class FeatureMeta:
    video: str  # source video path (or id for foreign features)
    duration: float  # seconds
    fps: float  # sampled frames per second the features were computed at
    feature_stride: int  # frames per feature step
    t0: float  # centre time of feature 0, seconds
    step: float  # seconds between consecutive features
    backbone: str  # e.g. "r3d_18"; "unknown" for foreign features
    weights: str  # weights id and checksum, e.g. "seeded:sha256:..."; "unknown" if foreign
    streams: tuple[str, ...]  # e.g. ("rgb", "flow")
    dim: int  # D
    num_features: int  # T
    extra: dict[str, Any] = field(default_factory=dict)
    # float32 (T, K): the per-step global (camera) motion of the flow, ``global_motion.COLUMNS``;
    # None for features without flow or made before it existed (key "global_motion" in files)
    motion: np.ndarray | None = field(default=None, compare=False, repr=False)

    def times(self) -> np.ndarray:
        """Centre time of every feature, seconds: float64 (T,)."""
        return self.t0 + self.step * np.arange(self.num_features, dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        from tal_pipeline.global_motion import COLUMNS

        d = asdict(replace(self, motion=None))
        del d["motion"]
        d["streams"] = list(self.streams)
        d["format"] = META_FORMAT
        if self.motion is not None:  # 4 decimals: 0.1 mpx, far below TV-L1's own noise
            d["global_motion"] = {"columns": list(COLUMNS),
                                  "values": np.round(np.asarray(self.motion, np.float64), 4).tolist()}
        return d


_REQUIRED = {
    "video": str,
    "duration": (int, float),
    "fps": (int, float),
    "feature_stride": int,
    "t0": (int, float),
    "step": (int, float),
    "dim": int,
    "num_features": int,
}


def meta_from_json(d: Any, source: str = "<meta>") -> FeatureMeta:
    """Validate a parsed ``.json`` meta; :class:`InputError` names the file and the field."""
    if not isinstance(d, dict):
        raise InputError(f"{source}: feature meta must be a JSON object")
    for key, typ in _REQUIRED.items():
        if key not in d:
            raise InputError(f"{source}: feature meta lacks '{key}'")
        if isinstance(d[key], bool) or not isinstance(d[key], typ):
            raise InputError(f"{source}: feature meta '{key}' has the wrong type")
    for key in ("duration", "fps", "step", "t0"):
        if not math.isfinite(float(d[key])):
            raise InputError(f"{source}: feature meta '{key}' is not finite")
    if d["fps"] <= 0 or d["step"] <= 0 or d["feature_stride"] <= 0:
        raise InputError(f"{source}: feature meta fps, step and feature_stride must be > 0")
    if d["duration"] < 0 or d["num_features"] < 0 or d["dim"] <= 0:
        raise InputError(f"{source}: feature meta duration/num_features/dim out of range")
    streams = d.get("streams", [])
    if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
        raise InputError(f"{source}: feature meta 'streams' must be a list of names")
    known = set(_REQUIRED) | {"backbone", "weights", "streams", "extra", "format", "global_motion"}
    extra = dict(d.get("extra") or {})
    extra.update({k: v for k, v in d.items() if k not in known})
    return FeatureMeta(
        video=d["video"],
        duration=float(d["duration"]),
        fps=float(d["fps"]),
        feature_stride=int(d["feature_stride"]),
        t0=float(d["t0"]),
        step=float(d["step"]),
        backbone=str(d.get("backbone", UNKNOWN)),
        weights=str(d.get("weights", UNKNOWN)),
        streams=tuple(streams),
        dim=int(d["dim"]),
        num_features=int(d["num_features"]),
        extra=extra,
        motion=_motion_from_json(d.get("global_motion"), int(d["num_features"]), source),
    )


def _motion_from_json(g: Any, num_features: int, source: str) -> np.ndarray | None:
    """A meta's ``global_motion`` ``{"columns": [...], "values": (T, K) lists}`` -> float32
    (T, K); None when absent or of other columns (another version's descriptor: not ours to
    read). Malformed values are refused like any other bad meta field."""
    from tal_pipeline.global_motion import COLUMNS

    if g is None:
        return None
    if not isinstance(g, dict) or not isinstance(g.get("values"), list):
        raise InputError(f"{source}: feature meta 'global_motion' must be an object with 'columns' and 'values'")
    if g.get("columns") != list(COLUMNS):
        return None
    try:
        values = np.asarray(g["values"], dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(f"{source}: feature meta 'global_motion' values are not a table of numbers") from None
    if values.shape != (num_features, len(COLUMNS)) or not np.isfinite(values).all():
        raise InputError(f"{source}: feature meta 'global_motion' must be {num_features} rows of "
                         f"{len(COLUMNS)} finite numbers, got shape {values.shape}")
    return values


def feature_paths(out_dir: str | os.PathLike, video_id: str) -> tuple[Path, Path]:
    """``out_dir/<id>.npy`` and ``.json``, the id made a file name that stays in ``out_dir``
    (``safety.file_in``; the ids ``tal extract`` makes are unchanged)."""
    from tal_pipeline.safety import file_in

    return file_in(out_dir, video_id, ".npy"), file_in(out_dir, video_id, ".json")


def save_features(
    out_dir: str | os.PathLike, video_id: str, array: np.ndarray, meta: FeatureMeta
) -> tuple[Path, Path]:
    """Write ``<id>.npy`` then ``<id>.json`` through ``safety`` (atomically; never over a file
    of another kind, e.g. ``tal detect``'s results, nor a device); returns both paths."""
    import io

    from tal_pipeline.safety import check_target, write_bytes, write_json

    array = np.asarray(array, dtype=np.float32)
    if array.ndim != 2 or array.shape != (meta.num_features, meta.dim):
        raise ValueError(f"features {array.shape} do not match meta ({meta.num_features}, {meta.dim})")
    npy, js = feature_paths(out_dir, video_id)
    check_target(js, "features")  # both checked before the first is written
    check_target(npy, "npy")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    write_bytes(npy, buf.getvalue(), "npy")
    write_json(js, meta.to_json(), "features")
    return npy, js


def _npy_problem(path: Path) -> str | None:
    """Why ``path`` is not a .npy file of plain numbers, from its header alone (nothing is
    unpickled): not a .npy at all, or Python objects; None if it looks fine."""
    fmt = np.lib.format
    try:
        with open(path, "rb") as f:
            if f.read(len(fmt.MAGIC_PREFIX)) != fmt.MAGIC_PREFIX:
                return "not a readable .npy file (it does not start with the NumPy header)"
            f.seek(0)
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            _, _, dtype = read(f, max_header_size=1 << 16)
    except (OSError, ValueError, EOFError, TypeError):
        return None  # np.load says what is wrong
    if dtype.hasobject:
        return "the .npy holds Python objects (a pickle), which are never loaded; features are a float array (T, D)"
    return None


def _read_npy(path: Path) -> np.ndarray:
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = None  # np.load says why
    if mode is not None and not stat.S_ISREG(mode):  # a FIFO would block np.load forever
        raise InputError(f"{path}: not a regular file")
    problem = _npy_problem(path)  # numpy's own message would suggest allow_pickle=: never here
    if problem is not None:
        raise InputError(f"{path}: {problem}")
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except FileNotFoundError:
        raise InputError(f"{path}: no such features file") from None
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"{path}: not a readable .npy file ({err})") from None
    if arr.ndim != 2:
        raise InputError(f"{path}: features must be 2-D (T, D), got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise InputError(f"{path}: features must be floating point, got {arr.dtype}")
    if arr.shape[0] == 0:
        raise InputError(f"{path}: no features (shape {arr.shape}): nothing to detect in (a "
                         "video shorter than one feature step has none)")
    arr = np.asarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: features contain NaN or infinite values")
    return arr


def load_features(
    npy_path: str | os.PathLike,
    fps: float | None = None,
    feature_stride: int | None = None,
    window_frames: int = 16,
) -> tuple[np.ndarray, FeatureMeta]:
    """Load ``(array float32 (T, D), meta)``.

    With a sibling ``.json``, its meta is used (``fps``/``feature_stride`` given here override
    nothing and must agree if given). Without one, ``fps`` and ``feature_stride`` are required.
    """
    npy = Path(npy_path)
    arr = _read_npy(npy)
    js = npy.with_suffix(".json")
    if js.exists():
        try:
            d = loads_json(js.read_text(encoding="utf-8"))  # deep nesting: malformed too
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"{js}: not valid JSON ({err})") from None
        meta = meta_from_json(d, str(js))
        if (meta.num_features, meta.dim) != arr.shape:
            raise InputError(
                f"{npy}: shape {arr.shape} does not match its meta "
                f"({meta.num_features}, {meta.dim})"
            )
        return arr, meta
    if fps is None or feature_stride is None:
        raise InputError(
            f"{npy}: no {js.name} beside it; pass --fps and --feature-stride for meta-less features"
        )
    if fps <= 0 or feature_stride <= 0:
        raise InputError(f"{npy}: fps and feature_stride must be > 0")
    step = feature_stride / fps
    t0 = 0.5 * window_frames / fps
    num = arr.shape[0]
    duration = (num - 1) * step + window_frames / fps if num else 0.0
    meta = FeatureMeta(
        video=npy.stem,
        duration=float(duration),
        fps=float(fps),
        feature_stride=int(feature_stride),
        t0=float(t0),
        step=float(step),
        backbone=UNKNOWN,
        weights=UNKNOWN,
        streams=(),
        dim=int(arr.shape[1]),
        num_features=int(num),
        extra={"window_frames": window_frames, "meta_less": True},
    )
    return arr, meta


def list_feature_files(folder: str | os.PathLike) -> list[Path]:
    """Sorted ``.npy`` files directly in ``folder`` (not recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of features")
    return sorted(p for p in folder.glob("*.npy") if p.is_file())


def is_complete(out_dir: str | os.PathLike, video_id: str) -> bool:
    """True when both files exist and the meta matches the array's shape (resume check)."""
    npy, js = feature_paths(out_dir, video_id)
    if not (npy.is_file() and js.is_file()):
        return False
    try:
        load_features(npy)
    except InputError:
        return False
    return True


def recorded_flow_version(extra: dict) -> int | None:
    """A feature meta's ``flow_version``: 1 for flow features made before the key existed."""
    if extra.get("flow_backend") is None:
        return None
    return extra.get("flow_version", 1)
