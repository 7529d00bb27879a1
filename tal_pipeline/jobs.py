"""Per-video work of the batch verbs, free of CLI concerns, for every way of running a batch.

A *job* is a small frozen, picklable description (paths and options, no model). ``setup()``
builds what the work needs once (the feature extractor, the detector) and returns a *worker*:

- ``process(vid, path)``: one video from its file to its output files, written atomically;
- ``is_done(vid, path)``: its outputs are complete and were made the same way (resume);
- ``outputs(vid)``: the files ``process`` writes (their stale temps are cleaned first);
- ``lock_dir``: the folder of the per-video locks.

The local loop (``batch.run_batch``), ``--shard`` and ``--ray`` (``ray_engine``, where each Ray
actor calls ``setup()`` once) all run ``batch``'s per-video step with these four, so a video
gives the same bytes whichever way ran it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def set_threads(threads: int | None) -> None:
    """Torch's intra-op thread count for this process, set once before any work.

    Part of a job's settings, not a detail: oneDNN splits a convolution's sums differently for
    another thread count, so features differ in the last bits (~1e-6). Every path that must give
    the same bytes (local, ``--ray``) runs the job with the same count. OpenMP gives each new
    thread (our prefetch and flow threads) the count from ``OMP_NUM_THREADS`` (Ray sets it to an
    actor's CPUs), not the main thread's: set it too, before torch starts its pools.
    """
    if threads is None:
        return
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def default_threads() -> int:
    """What the local path uses when ``--threads`` is not given: OpenMP's (and so torch's)
    default, ``OMP_NUM_THREADS`` or the CPUs this process may run on."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class ExtractJob:
    """``tal extract``: ``OUT/<id>.npy`` + ``OUT/<id>.json`` per video."""

    out_dir: Path  # the features folder (on storage every worker sees)
    extractor: dict[str, Any] = field(default_factory=dict)  # FeatureExtractor keyword options
    overwrite: bool = False  # recompute videos whose outputs exist
    threads: int | None = None  # torch intra-op threads (None: torch's default, all cores)

    def setup(self) -> ExtractWorker:
        from tal_pipeline.features import FeatureExtractor
        from tal_pipeline.memory import EXTRACT_MMAP_THRESHOLD, tune_malloc

        set_threads(self.threads)
        tune_malloc(EXTRACT_MMAP_THRESHOLD)  # long batches: flat memory first (see memory.py)
        fx = FeatureExtractor(**self.extractor)  # weights that cannot load fail here, first
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return ExtractWorker(self, fx)


@dataclass
class ExtractWorker:
    job: ExtractJob
    fx: Any  # FeatureExtractor

    @property
    def lock_dir(self) -> Path:
        return self.job.out_dir

    def outputs(self, vid: str) -> list[Path]:
        from tal_pipeline.featio import feature_paths

        return list(feature_paths(self.job.out_dir, vid))

    def is_done(self, vid: str, path: Path) -> bool:
        return not self.job.overwrite and features_complete(self.job.out_dir, vid, self.fx)

    def process(self, vid: str, path: Path) -> None:
        from tal_pipeline.featio import save_features

        feats = self.fx.extract(path)
        save_features(self.job.out_dir, vid, feats.array, feats.meta)


@dataclass(frozen=True)
class DetectJob:
    """``tal detect``: per-video results (JSON record + other formats) or parts of a merged file.

    The driver resolves what must agree everywhere (the provenance, ``external_data``, the
    precision "auto" stands for) and passes it as data, so every worker writes the same bytes.
    """

    output_arg: str  # -o as given: DIR/ or a file (its parts folder then holds the records)
    formats: tuple[str, ...]  # json, vtt, srt, csv, tsv
    writer_options: Any  # writers.WriterOptions
    overwrite: bool
    provenance: dict  # what makes the results (recorded and compared on resume)
    external: dict  # the results' external_data (provenance included)
    detector: dict  # Detector.load keyword options (model, device, precision, ...)
    use_features: bool = False  # inputs are feature files
    annotations: str | None = None  # meta-less .npy: per-video fps and duration
    fps: float | None = None  # meta-less .npy options (detect_feature_file)
    feature_stride: int | None = None
    window_frames: int | None = None
    threads: int | None = None  # torch intra-op threads (see set_threads)

    def setup(self) -> DetectWorker:
        from tal_pipeline.memory import tune_malloc
        from tal_pipeline.outputs import DetectionOutput
        from tal_pipeline.pipeline import Detector

        set_threads(self.threads)
        tune_malloc()  # long videos: bounded peak memory (memory.py)
        det = Detector.load(**self.detector)
        out = DetectionOutput(self.output_arg, self.overwrite, self.provenance, self.formats,
                      self.writer_options, worker=True)
        ann = None
        if self.annotations is not None:
            from tal_pipeline.annotations import load_annotations

            ann = load_annotations(self.annotations)
        return DetectWorker(self, det, out, ann)


@dataclass
class DetectWorker:
    job: DetectJob
    det: Any  # pipeline.Detector
    out: Any  # outputs.DetectionOutput (a worker's view when on Ray)
    ann: Any = None  # annotations for meta-less features
    found: dict[str, list] = field(default_factory=dict)  # vid -> segments, done here

    @property
    def lock_dir(self) -> Path:
        return self.out.parts

    def outputs(self, vid: str) -> list[Path]:
        return self.out.outputs(vid)

    def is_done(self, vid: str, path: Path) -> bool:
        return self.out.is_done(vid)

    def process(self, vid: str, path: Path) -> None:
        from tal_pipeline.results import make_results

        j = self.job
        if j.use_features:
            detection = detect_feature_file(self.det, path, vid, self.ann, j.fps, j.feature_stride,
                                        j.window_frames)
        else:
            detection = self.det.detect_video(path)
        results = make_results({vid: detection.segments}, {vid: detection.video_meta()}, j.external)
        for dest in self.out.outputs(vid):
            self.out.check_replaceable(dest)
        self.out.write(vid, results)
        self.found[vid] = detection.segments


def extract_provenance(fx) -> dict:
    """What makes ``tal extract``'s features: backbone, weights id and checksum, streams, the flow
    backend when there is a flow stream, frame size, precision. Resume skips a video only if the features
    there have an equal dict (:func:`recorded_provenance`). An option that changes the features
    adds its key to both functions; the comparison (``batch.check_provenance``) knows no keys."""
    from tal_pipeline.flow import flow_version

    streams = list(fx.options.streams)
    return {
        "backbone": fx.backbone_id,
        "weights": fx.loaded.label,
        "streams": streams,
        "flow_backend": fx.options.flow_backend if "flow" in streams else None,
        "flow_version": flow_version(streams, fx.options.flow_backend),
        "size": int(fx.options.size or fx.transform.crop),
        "precision": fx.options.precision,  # "auto" resolved: bf16 and fp32 features differ
    }


def recorded_provenance(meta) -> dict:
    """The keys of :func:`extract_provenance`, read from a feature meta (what made those features)."""
    from tal_pipeline.featio import recorded_flow_version

    return {
        "backbone": meta.backbone,
        "weights": meta.weights,
        "streams": list(meta.streams),
        "flow_backend": meta.extra.get("flow_backend"),
        "flow_version": recorded_flow_version(meta.extra),
        "size": meta.extra.get("size"),
        "precision": meta.extra.get("precision", "fp32"),  # features older than the key: fp32
    }


def features_complete(out_dir: Path, vid: str, fx) -> bool:
    """Complete pair from the same settings -> True; from other settings -> StaleOutputError
    (one line naming ``--overwrite``)."""
    from tal_pipeline.batch import check_provenance
    from tal_pipeline.featio import feature_paths, is_complete, load_features

    if not is_complete(out_dir, vid):
        return False
    npy = feature_paths(out_dir, vid)[0]
    _, meta = load_features(npy)
    check_provenance(npy, extract_provenance(fx), recorded_provenance(meta))
    return True


def detect_feature_file(det, path: Path, vid: str, ann, fps, feature_stride, window_frames):
    """Pre-extracted features. Meta-less ``.npy``: frame rate from the annotation file's per-video
    ``fps`` when given (THUMOS14 mixes rates), else ``--fps``; duration from the annotation file
    when it has the video, else from the features."""
    from dataclasses import replace

    from tal_pipeline.featio import load_features

    a = ann.videos.get(vid) if ann is not None else None
    arr, meta = load_features(path, fps=(a.fps if a and a.fps else fps),
                              feature_stride=feature_stride, window_frames=window_frames)
    if a is not None and a.duration > 0:
        meta = replace(meta, duration=float(a.duration))
    return det.detect_features(arr, meta, video=str(path))
