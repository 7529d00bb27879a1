"""File formats: ground-truth annotations in, detection results out (docs/design.md, "Files").

Annotations are the ActivityNet / ActionFormer JSON (times in seconds)::

    {"database": {"<video_id>": {"subset": "validation", "duration": 93.2, "fps": 30.0,
                                 "annotations": [{"label": "pan_left", "segment": [12.4, 18.0]}]}}}

``subset`` (default ``""``) and ``fps`` (default none) are optional; ``annotations`` may be
missing or empty (a video without instances); other keys (``version``, ``taxonomy``,
``label_id``, ``url``, ...) are ignored.

Results are the ActivityNet results schema (the official evaluation code reads it unchanged)
plus per-video metadata::

    {"version": "tal-pipeline/0.1",
     "results": {"<video_id>": [{"label": "pan_left", "score": 0.93, "segment": [12.4, 18.0]}]},
     "external_data": {"backbone": "...", "model": "..."},
     "videos": {"<video_id>": {"path": "...", "duration": 93.2, "fps": 10.0}}}

Every malformed file gives an :class:`~tal_pipeline.errors.InputError` that names the file and
the JSON path of what is wrong, e.g.
``ann.json: database['v1'].annotations[2].segment: expected [t0, t1] with t0 <= t1``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tal_pipeline._version import __version__
from tal_pipeline.errors import InputError
from tal_pipeline.postprocess import Segment

log = logging.getLogger(__name__)

RESULTS_VERSION = "tal-pipeline/" + ".".join(__version__.split(".")[:2])  # e.g. tal-pipeline/0.1


# ---------------------------------------------------------------- annotations


@dataclass(frozen=True)
class VideoAnnotation:
    """Ground truth of one video."""

    duration: float  # seconds
    subset: str  # e.g. "training", "validation", "Test" ("" when the file gives none)
    fps: float | None  # the original video's frame rate, when the file gives it
    segments: tuple[tuple[str, float, float], ...]  # (label, t0 s, t1 s), in file order


@dataclass(frozen=True)
class Annotations:
    """Ground truth of a set of videos (the ``database`` of an annotation file)."""

    videos: dict[str, VideoAnnotation]  # video id -> its ground truth, in file order
    source: str = "<annotations>"  # where it came from (for messages)

    @property
    def class_names(self) -> list[str]:
        """Sorted labels of all instances."""
        return sorted({label for v in self.videos.values() for label, _, _ in v.segments})

    @property
    def num_instances(self) -> int:
        return sum(len(v.segments) for v in self.videos.values())

    @property
    def subsets(self) -> dict[str, int]:
        """Subset name -> number of videos, in first-seen order."""
        counts: dict[str, int] = {}
        for v in self.videos.values():
            counts[v.subset] = counts.get(v.subset, 0) + 1
        return counts

    def select(self, subset: str | Iterable[str] | None) -> Annotations:
        """The videos of the given subset(s) (case-insensitive; a string may list several,
        comma-separated); ``None`` keeps all. No video in the subset is an InputError."""
        if subset is None:
            return self
        names = _subset_names(subset)
        videos = {vid: v for vid, v in self.videos.items() if v.subset.lower() in names}
        if not videos:
            have = ", ".join(f"{s or '(none)'} ({n})" for s, n in self.subsets.items()) or "none"
            raise InputError(
                f"{self.source}: no video in subset {', '.join(sorted(names))!s}; "
                f"subsets in the file: {have}"
            )
        return Annotations(videos, self.source)


def _subset_names(subset: str | Iterable[str]) -> set[str]:
    items = subset.split(",") if isinstance(subset, str) else list(subset)
    names = {s.strip().lower() for s in items if s.strip()}
    if not names:
        raise InputError(f"empty subset name: {subset!r}")
    return names


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@contextmanager
def user_file(path: Path, what: str):
    """Opening and reading ``path`` (``what``: "a JSON file", ...): a missing file, a folder or a
    read error becomes one InputError line naming the file; parse errors are the caller's."""
    try:
        yield
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, expected {what}") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror or err}") from None


def _read_json(path: Path):
    try:
        with user_file(path, "a JSON file"), open(path, encoding="utf-8") as f:
            from tal_pipeline.errors import loads_json  # deep nesting: malformed, not a crash

            return loads_json(f.read())
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON: line {err.lineno} column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not valid JSON: not UTF-8 text") from None


def _parse_segment(name: str, where: str, seg) -> tuple[float, float]:
    if not isinstance(seg, (list, tuple)) or len(seg) != 2:
        raise InputError(f"{name}: {where}: expected [t0, t1] with t0 <= t1, got {seg!r}")
    if not all(_is_number(t) for t in seg):  # NaN and Infinity parse as JSON numbers
        raise InputError(
            f"{name}: {where}: expected [t0, t1], two finite numbers of seconds, got {_show(seg)}"
        )
    if seg[0] > seg[1]:
        raise InputError(f"{name}: {where}: expected [t0, t1] with t0 <= t1, got {seg!r}")
    return float(seg[0]), float(seg[1])


def _show(seg) -> str:
    """A segment as JSON writes it (``NaN``, ``Infinity``), not as Python does (``nan``)."""
    return json.dumps(list(seg)) if all(isinstance(t, (int, float)) for t in seg) else repr(seg)


def _parse_video_annotation(name: str, vid: str, entry) -> VideoAnnotation:
    where = f"database[{vid!r}]"
    if not isinstance(entry, Mapping):
        raise InputError(f"{name}: {where}: expected an object, got {type(entry).__name__}")
    if "duration" not in entry:
        raise InputError(f"{name}: {where}: missing 'duration' (seconds)")
    duration = entry["duration"]
    if not _is_number(duration) or duration < 0:
        raise InputError(f"{name}: {where}.duration: expected a number >= 0 (seconds), got {duration!r}")
    subset = entry.get("subset", "")
    if not isinstance(subset, str):
        raise InputError(f"{name}: {where}.subset: expected a string, got {subset!r}")
    fps = entry.get("fps")
    if fps is not None and (not _is_number(fps) or fps <= 0):
        raise InputError(f"{name}: {where}.fps: expected a number > 0, got {fps!r}")
    anns = entry.get("annotations", [])
    if anns is None:
        anns = []
    if not isinstance(anns, list):
        raise InputError(f"{name}: {where}.annotations: expected a list, got {type(anns).__name__}")
    segments = []
    for k, ann in enumerate(anns):
        here = f"{where}.annotations[{k}]"
        if not isinstance(ann, Mapping):
            raise InputError(f"{name}: {here}: expected an object with 'label' and 'segment'")
        label = ann.get("label")
        if not isinstance(label, str) or not label:
            raise InputError(f"{name}: {here}.label: expected a non-empty string, got {label!r}")
        if "segment" not in ann:
            raise InputError(f"{name}: {here}: missing 'segment' ([t0, t1] in seconds)")
        t0, t1 = _parse_segment(name, f"{here}.segment", ann["segment"])
        segments.append((label, t0, t1))
    return VideoAnnotation(float(duration), subset, None if fps is None else float(fps), tuple(segments))


def parse_annotations(obj, source: str = "<annotations>", subset=None) -> Annotations:
    """Validate an already-loaded annotation object (see the module docstring) and select
    ``subset``; ``source`` names it in error messages."""
    if not isinstance(obj, Mapping):
        raise InputError(f"{source}: expected a JSON object with a 'database', got {type(obj).__name__}")
    if "database" not in obj:
        raise InputError(f"{source}: missing 'database' (ActivityNet/ActionFormer annotation format)")
    db = obj["database"]
    if not isinstance(db, Mapping):
        raise InputError(f"{source}: database: expected an object of video id -> entry")
    videos = {str(vid): _parse_video_annotation(source, str(vid), e) for vid, e in db.items()}
    if not videos:
        raise InputError(f"{source}: database: no videos")
    return Annotations(videos, source).select(subset)


def load_annotations(path, subset: str | Iterable[str] | None = None) -> Annotations:
    """Read an ActivityNet/ActionFormer annotation file; keep the videos of ``subset``.

    Args:
        path: the JSON file, or an already-loaded dict (tests skip the disk).
        subset: subset name(s), case-insensitive (``"validation"``, ``"Test"``,
            ``"training,validation"``); ``None`` keeps every video.

    Raises:
        InputError: unreadable file, schema error, or no video in ``subset``.
    """
    if isinstance(path, Mapping):
        return parse_annotations(path, "<annotations>", subset)
    return parse_annotations(_read_json(Path(path)), str(path), subset)


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class Results:
    """Detections read from a results file or folder."""

    detections: dict[str, list[Segment]]  # video id -> segments (seconds), file order
    videos: dict[str, dict] = field(default_factory=dict)  # video id -> metadata (path, ...)
    external_data: dict = field(default_factory=dict)  # backbone, model, ...
    version: str | None = None  # the files' "version" (first one seen)
    source: str = "<results>"


def _segment_dict(seg) -> dict:
    if isinstance(seg, Segment):
        return seg.to_json()
    if isinstance(seg, Mapping):
        return {"label": seg["label"], "score": float(seg["score"]), "segment": [float(t) for t in seg["segment"]]}
    return Segment(seg.label, seg.score, seg.start, seg.end).to_json()


def _jsonable(value):
    """Metadata values as JSON types: paths to str, numpy scalars/arrays to Python, recursively."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        return value.tolist()
    return value


def make_results(
    per_video: Mapping[str, Sequence[Segment]],
    videos_meta: Mapping[str, Mapping] | None = None,
    external_data: Mapping | None = None,
) -> dict:
    """Build the results object (module docstring) ready for :func:`write_results`.

    Args:
        per_video: video id -> its segments (``Segment`` or ``{"label", "score", "segment"}``).
        videos_meta: video id -> metadata, e.g. ``{"path": ..., "duration": s, "fps": 10.0}``.
        external_data: what produced the results, e.g. ``{"backbone": ..., "model": ...}``.
    """
    return {
        "version": RESULTS_VERSION,
        "results": {str(vid): [_segment_dict(s) for s in segs] for vid, segs in per_video.items()},
        "external_data": _jsonable(dict(external_data or {})),
        "videos": {str(vid): _jsonable(dict(meta)) for vid, meta in (videos_meta or {}).items()},
    }


def split_results(results: Mapping) -> dict[str, dict]:
    """Split a results object into one results object per video (for ``-o DIR/``)."""
    out = {}
    for vid, segs in results.get("results", {}).items():
        out[vid] = {
            "version": results.get("version", RESULTS_VERSION),
            "results": {vid: list(segs)},
            "external_data": dict(results.get("external_data", {})),
            "videos": {vid: dict(results["videos"][vid])} if vid in results.get("videos", {}) else {},
        }
    return out


def write_results(path, results: Mapping, inputs=None) -> Path:
    """Write a results object to ``path`` (``safety.write_json``: atomically, never over a file
    of another kind or an input of the run, a ``safety.Inputs``); creates parents."""
    from tal_pipeline.safety import NO_INPUTS, write_json

    return write_json(path, dict(results), "results", inputs or NO_INPUTS)


def _parse_results_obj(name: str, obj) -> Results:
    if not isinstance(obj, Mapping):
        raise InputError(f"{name}: expected a JSON object with 'results', got {type(obj).__name__}")
    if "results" not in obj:
        raise InputError(f"{name}: missing 'results' (ActivityNet results format)")
    res = obj["results"]
    if not isinstance(res, Mapping):
        raise InputError(f"{name}: results: expected an object of video id -> list of detections")
    detections: dict[str, list[Segment]] = {}
    for vid, segs in res.items():
        where = f"results[{vid!r}]"
        if not isinstance(segs, list):
            raise InputError(f"{name}: {where}: expected a list of detections, got {type(segs).__name__}")
        parsed = []
        for k, d in enumerate(segs):
            here = f"{where}[{k}]"
            if not isinstance(d, Mapping):
                raise InputError(f"{name}: {here}: expected an object with 'label', 'score', 'segment'")
            label = d.get("label")
            if not isinstance(label, str) or not label:
                raise InputError(f"{name}: {here}.label: expected a non-empty string, got {label!r}")
            score = d.get("score")
            if not _is_number(score):
                raise InputError(f"{name}: {here}.score: expected a finite number, got {score!r}")
            if "segment" not in d:
                raise InputError(f"{name}: {here}: missing 'segment' ([t0, t1] in seconds)")
            t0, t1 = _parse_segment(name, f"{here}.segment", d["segment"])
            parsed.append(Segment(label, float(score), t0, t1))
        detections[str(vid)] = parsed
    videos = obj.get("videos")
    videos = {} if videos is None else videos
    if not isinstance(videos, Mapping):
        raise InputError(f"{name}: videos: expected an object of video id -> metadata")
    external = obj.get("external_data")
    external = {} if external is None else external
    if not isinstance(external, Mapping):
        raise InputError(f"{name}: external_data: expected an object")
    version = obj.get("version")
    return Results(detections, dict(videos), dict(external), None if version is None else str(version), name)


def results_record(path: str | os.PathLike) -> Path:
    """Where the results behind what ``tal detect`` wrote are (docs/formats.md): a folder
    without visible ``*.json`` results -> its ``.tal/`` (``-o DIR/ --format vtt``); a file that
    is not JSON (``x.vtt``, ``x.csv``) -> ``.x.vtt.json`` beside it (merged), else
    ``.tal/x.json`` in its folder (per video), else ``x.json`` beside it (``--format vtt,json``).
    Anything else: ``path`` as it is."""
    path = Path(path)
    if path.is_dir():
        hidden = path / ".tal"
        if hidden.is_dir() and not any(_visible_json(path)):
            return hidden
        return path
    if path.suffix.lower() == ".json" or not path.is_file():
        return path
    for record in (path.with_name(f".{path.name}.json"), path.parent / ".tal" / f"{path.stem}.json",
                   path.with_suffix(".json")):  # -o x.vtt --format vtt,json: x.json
        if record.is_file():
            return record
    return path


def _visible_json(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() == ".json" and not p.name.startswith(".") and p.is_file())


def load_results(path) -> Results:
    """Read detections from a merged results file or a folder of per-video results files, or
    what ``tal detect`` wrote in any format (:func:`results_record`: ``DIR/`` of subtitles,
    ``x.vtt``: the hidden JSON record behind them).

    A folder: every ``*.json`` directly in it (sorted by name); files without a ``results`` key
    are skipped with a warning (e.g. a failure list); a video in two files is an error.

    Raises:
        InputError: unreadable or malformed file, empty folder, duplicate video.
    """
    if isinstance(path, Mapping):
        return _parse_results_obj("<results>", path)
    path = results_record(path)
    if not path.is_dir():
        return _parse_results_obj(str(path), _read_json(path))
    files = _visible_json(path)
    detections: dict[str, list[Segment]] = {}
    videos: dict[str, dict] = {}
    external: dict = {}
    version = None
    origin: dict[str, Path] = {}
    parsed_files = 0
    for p in files:
        obj = _read_json(p)
        if isinstance(obj, Mapping) and "results" not in obj:
            log.warning("%s: no 'results' key, skipped (not a results file)", p)
            continue
        part = _parse_results_obj(str(p), obj)
        parsed_files += 1
        for vid, segs in part.detections.items():
            if vid in detections:
                raise InputError(f"{p}: video {vid!r} already in {origin[vid]}")
            detections[vid] = segs
            origin[vid] = p
        videos.update(part.videos)
        for k, v in part.external_data.items():
            external.setdefault(k, v)
        version = version or part.version
    if not parsed_files:
        raise InputError(f"{path}: no results files (*.json with a 'results' key) in the folder")
    return Results(detections, videos, external, version, str(path) + os.sep)


def as_results(results) -> Results:
    """A :class:`Results` as it is, or loaded from a path or a results dict."""
    return results if isinstance(results, Results) else load_results(results)


def as_annotations(annotations) -> Annotations | None:
    """``None``, an :class:`Annotations` as it is, or loaded from a path or a dict."""
    if annotations is None:
        return None
    return annotations if isinstance(annotations, Annotations) else load_annotations(annotations)
