"""``tal detect INPUT... -o OUT``: temporal action detections as ActivityNet results JSON.

Today only ``--features`` (INPUTs are feature files from ``tal extract`` or foreign ``.npy``);
the raw-video path plugs in at :func:`_detect_videos`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import click

from tal_pipeline.errors import InputError, NotAvailableError, TalError

log = logging.getLogger(__name__)


def _expand_inputs(inputs: Iterable[str], suffixes: tuple[str, ...]) -> list[Path]:
    """Files named, the matching files of folders (sorted) and of list files (one path a line)."""
    from tal_pipeline.featio import list_feature_files

    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            paths.extend(list_feature_files(p) if suffixes == (".npy",) else sorted(
                q for q in p.rglob("*") if q.suffix.lower() in suffixes))
        elif p.suffix.lower() in (".txt", ".lst", ".list") and p.is_file():
            lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
            paths.extend((p.parent / ln) for ln in lines if ln and not ln.startswith("#"))
        else:
            paths.append(p)
    if not paths:
        raise InputError("no input files found")
    return paths


def _video_ids(paths: list[Path]) -> dict[str, Path]:
    """Video id (file name without extension) -> path; collisions are an error before any work."""
    ids: dict[str, Path] = {}
    for p in paths:
        if p.stem in ids and ids[p.stem] != p:
            raise InputError(f"two inputs share the video id {p.stem!r}: {ids[p.stem]} and {p}")
        ids[p.stem] = p
    return ids


def resolve_model(model: str) -> Path:
    """A checkpoint path; ``demo`` is the shipped demo detector (``weights/``)."""
    p = Path(model)
    if p.is_file():
        return p
    if model == "demo":
        try:
            from importlib.resources import files

            for entry in files("tal_pipeline.weights").iterdir():
                if entry.name.endswith(".pt") and entry.name.startswith("demo"):
                    return Path(str(entry))
        except (ModuleNotFoundError, FileNotFoundError):
            pass
        raise NotAvailableError("the demo detector is not shipped in this install; pass --model PATH")
    raise InputError(f"{model}: no such model checkpoint")


def _write_outputs(output: Path, per_video: dict, videos_meta: dict, external: dict, split: bool) -> None:
    from tal_pipeline.results import make_results, split_results, write_results

    results = make_results(per_video, videos_meta, external)
    if split:
        for vid, obj in split_results(results).items():
            write_results(output / f"{vid}.json", obj)
    else:
        write_results(output, results)


def _run_batch(ids: dict[str, Path], work: Callable[[str, Path], tuple[list, dict]], progress: bool,
               skip: Callable[[str], bool]) -> tuple[dict, dict, list[tuple[str, str]]]:
    """Run ``work`` on every input; one failure never stops the others."""
    from tqdm import tqdm

    per_video, meta, failures = {}, {}, []
    for vid, path in tqdm(ids.items(), disable=not progress, desc="detect", unit="video"):
        if skip(vid):
            log.info("%s: already done, skipped", vid)
            continue
        try:
            per_video[vid], meta[vid] = work(vid, path)
        except TalError as err:
            failures.append((str(path), str(err)))
            log.error("%s: %s", path, err)
    return per_video, meta, failures


def _detect_features(ids, predictor, post, fps, feature_stride, window_frames, annotations=None):
    """Per-video work for feature files. Meta-less ``.npy``: frame rate from the annotation
    file's per-video ``fps`` when given (THUMOS14 mixes rates), else ``fps``; duration from the
    annotation file when it has the video, else from the features."""
    from tal_pipeline.featio import load_features

    def work(vid: str, path: Path):
        ann = annotations.videos.get(vid) if annotations is not None else None
        arr, meta = load_features(path, fps=(ann.fps if ann and ann.fps else fps), feature_stride=feature_stride,
                                  window_frames=window_frames)
        predictor.check_features(arr.shape[1], meta.backbone, meta.weights, str(path))
        duration = ann.duration if ann and ann.duration > 0 else meta.duration
        segs = predictor.predict(arr, meta.times(), meta.step, duration, post)
        return segs, {"path": str(path), "duration": duration, "fps": meta.fps}

    return work


def _detect_videos(inputs, output, model, device, min_score, top_k, overwrite, quiet):
    """The raw-video path (decode -> flow -> backbone -> head); the lead plugs it in here."""
    raise NotAvailableError("tal detect on raw video is not available yet; pass --features")


@click.command("detect")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "output_arg", required=True, type=click.Path(),
              help="x.json: one file for all inputs; DIR/ (or an existing folder): DIR/<video_id>.json each.")
@click.option("--model", default="demo", show_default=True, help="Checkpoint from 'tal train', or 'demo'.")
@click.option("--features", "use_features", is_flag=True, help="INPUTs are feature files (.npy [+ .json]).")
@click.option("--fps", type=float, default=None, help="Meta-less .npy: the video's frame rate.")
@click.option("--feature-stride", type=int, default=None, help="Meta-less .npy: frames per feature step.")
@click.option("--window-frames", type=int, default=16, show_default=True, help="Meta-less .npy: frames per window.")
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Meta-less .npy: take each video's fps and duration from this ActivityNet JSON.")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--min-score", type=float, default=0.001, show_default=True, help="Drop detections scoring below this.")
@click.option("--top-k", type=int, default=200, show_default=True, help="At most this many detections per video.")
@click.option("--overwrite", is_flag=True, help="With -o DIR/: redo videos whose output exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def command(inputs, output_arg, model, use_features, fps, feature_stride, window_frames, annotations, device,
            min_score, top_k, overwrite, quiet):
    """Detect actions in INPUT (files, folders or list files) and write ActivityNet results JSON."""
    from tal_pipeline.inference import HeadPredictor
    from tal_pipeline.postprocess import PostprocessConfig

    if top_k < 1:
        raise InputError("--top-k must be >= 1")
    if not use_features:
        return _detect_videos(inputs, output_arg, model, device, min_score, top_k, overwrite, quiet)
    output = Path(output_arg)  # (Path drops a trailing slash: look at the raw string)
    split = output_arg.endswith(("/", os.sep)) or output.is_dir()
    ids = _video_ids(_expand_inputs(inputs, (".npy",)))
    predictor = HeadPredictor.load(resolve_model(model), device=device)
    post = PostprocessConfig(min_score=min_score, max_segments=top_k)
    ann = None
    if annotations is not None:
        from tal_pipeline.results import load_annotations

        ann = load_annotations(annotations)
    work = _detect_features(ids, predictor, post, fps, feature_stride, window_frames, ann)

    def done(vid: str) -> bool:
        return split and not overwrite and (output / f"{vid}.json").is_file()

    per_video, meta, failures = _run_batch(ids, work, not quiet, done)
    feats = predictor.meta["features"]
    external = {"backbone": feats.get("backbone", "unknown"), "weights": feats.get("weights", "unknown"),
                "model": str(predictor.meta["path"])}
    if per_video or not split:
        _write_outputs(output, per_video, meta, external, split)
    n = sum(len(s) for s in per_video.values())
    click.echo(f"{len(per_video)} videos, {n} detections -> {output}", err=True)
    if failures:
        click.echo(f"{len(failures)} failed:", err=True)
        for path, why in failures:
            click.echo(f"  {path}: {why}", err=True)
        raise TalError(f"{len(failures)} of {len(ids)} inputs failed")
