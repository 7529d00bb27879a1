"""``tal detect INPUT... -o OUT``: temporal action detections as ActivityNet results JSON.

INPUTs are videos (files, folders searched recursively, ``.txt`` lists), or with ``--features``
feature files from ``tal extract`` (or foreign meta-less ``.npy`` with ``--fps`` and
``--feature-stride``).

Outputs (docs/design.md, "Files"):

- ``-o DIR/`` (trailing slash, or an existing folder): ``DIR/<video_id>.json`` per video.
  Resume: a video whose file exists is skipped (``--overwrite`` redoes it).
- ``-o x.json``: one merged file. Each finished video is first kept in ``x.json.parts/`` so an
  interrupted run (Ctrl-C, SIGTERM, even SIGKILL) resumes there; the merged file is written
  atomically at the end (videos already in an existing ``x.json`` are kept and skipped), and
  the parts folder is removed once every video succeeded and no other run is on it.
- Other formats (``tal_pipeline/writers.py``): ``-o x.vtt`` (the extension picks it) or
  ``--format vtt,csv`` (several; ``-o x.json --format json,vtt`` writes ``x.json`` and
  ``x.vtt``; with ``-o DIR/`` one ``DIR/<video_id>.<format>`` per video and format). The JSON
  results stay the record resume reads: without ``json`` among the formats they are kept
  hidden, in ``DIR/.tal/<video_id>.json`` or ``.x.vtt.json`` beside a merged ``x.vtt``. A video
  is done only when every requested file exists (and its JSON is valid, with our provenance);
  a merge (re)writes every merged format from the complete results.

Every file is written atomically. Several processes may run on the same output: each video is
detected under a lock ``.<video_id>.lock`` in DIR or ``x.json.parts/`` (``batch.run_batch``); a
video another process is on counts as *busy* and is left to it. In merged mode each run holds
``.x.json.parts.lock`` (shared) while it runs and merges under ``.x.json.lock``, re-reading
``x.json`` first, so concurrent runs (e.g. ``--shard``s) never drop each other's results.

A failing video is one line ``tal: <file>: <cause>``; the others go on; the failures are
listed at the end and in ``failures.txt`` beside the output; exit status 1 if any failed.
A single video also gets a short summary of its segments on stdout.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from tal_pipeline.commands.options import (
    FiniteFloat,
    batch_options,
    formats_option,
    npy_options,
    run_job,
)
from tal_pipeline.outputs import DetectionOutput

log = logging.getLogger(__name__)


def provenance(det, use_features: bool) -> dict:
    """What makes ``tal detect``'s results (recorded in ``external_data.provenance``): the
    detector's (model checksum, backbone and weights, post-processing, and for raw video the
    extractor's streams and flow backend). One dict: options that change results add a key."""
    return det.provenance("features" if use_features else "video")


@click.command("detect")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "output_arg", required=True, type=click.Path(),
              help="x.json: one file for all inputs; DIR/ (or an existing folder): DIR/<video_id>.json each. "
              "The extension picks the format: .json .vtt .srt .csv .tsv.")
@formats_option("Comma-separated formats among json,vtt,srt,csv,tsv, written together [default: -o's "
                "extension; json for DIR/].")
@click.option("--model", default="demo", show_default=True,
              help="Checkpoint from 'tal train', or 'demo' (the shipped camera-motion detector).")
@click.option("--features", "use_features", is_flag=True, help="INPUTs are feature files (.npy [+ .json]).")
@npy_options
@click.option("--annotations", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Meta-less .npy: take each video's fps and duration from this ActivityNet JSON (or CSV: duration).")
@click.option("--flow", "flow_backend", type=click.Choice(["opencv", "torch"]), default=None,
              help="TV-L1 implementation for raw video (default: the one the model was trained with).")
@click.option("--weights", default=None,
              help="Backbone weights file for raw video (e.g. a local Kinetics .pth); must match the model's checksum.")
@click.option("--min-score", type=FiniteFloat(0, 1), default=None,
              help="Drop detections scoring below this [default: 0.001; vtt/srt cues: 0.3].")
@click.option("--top-k", type=click.IntRange(1), default=200, show_default=True, help="At most this many detections per video.")
@click.option("--no-motion-check", "no_motion_check", is_flag=True,
              help="Do not apply the model's camera-motion check (the demo declares one: a detection whose "
              "camera motion the global fit of the flow does not show is demoted; docs/method.md).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a self-contained HTML report of the detections.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar (same as --no-progress).")
@batch_options
def command(inputs, output_arg, formats, model, use_features, fps, feature_stride, window_frames, annotations,
            device, flow_backend, weights, precision, min_score, top_k, no_motion_check, overwrite, shard,
            report_path, progress, quiet, ray_address, workers, gpus_per_worker, threads, busy_wait):
    """Detect actions in INPUT (videos, folders or list files); write ActivityNet results JSON (or
    WebVTT, SRT, CSV, TSV: -o's extension or --format)."""
    from tal_pipeline.inputs import VIDEO_EXTENSIONS, select_inputs
    from tal_pipeline.jobs import DetectJob, DetectWorker, default_threads, set_threads
    from tal_pipeline.pipeline import Detector
    from tal_pipeline.postprocess import PostprocessConfig

    if quiet:
        progress = False
    from tal_pipeline.writers import SUBTITLE_MIN_SCORE, WriterOptions

    cues = WriterOptions(min_score=SUBTITLE_MIN_SCORE if min_score is None else min_score)
    problems: list = []  # folders that could not be walked: failures of this batch
    if use_features:
        items = select_inputs(inputs, shard, frozenset([".npy"]), ".npy feature files", problems)
    else:
        items = select_inputs(inputs, shard, VIDEO_EXTENSIONS, problems=problems)

    post = PostprocessConfig(min_score=0.001 if min_score is None else min_score, max_segments=top_k,
                             motion_check=not no_motion_check)
    threads = threads or default_threads()
    set_threads(threads)  # before torch starts its pools: the local path computes like a worker
    if ray_address is None:
        from tal_pipeline.memory import tune_malloc

        tune_malloc()  # long videos: bounded peak memory (memory.py); a Ray worker does its own
    det = Detector.load(model, device=device, flow_backend=flow_backend, weights=weights,
                        postprocess=post, build_extractor=not use_features,
                        precision=precision)
    ann = None
    if annotations is not None:
        from tal_pipeline.annotations import load_annotations

        ann = load_annotations(annotations)
    out = DetectionOutput(output_arg, overwrite, provenance(det, use_features), formats, cues, list(items),
                          inputs=[*items.values(), model, annotations], report=report_path)
    claim = None
    try:
        if out.split:  # never at the same time as a tal extract into this folder (locks.py)
            from tal_pipeline.locks import claim_folder

            claim = claim_folder(out.path, "detections", "features", _holds_features)
        # the per-video work (jobs.py), the same for the local loop and for --ray workers
        job = DetectJob(
            output_arg=output_arg, formats=formats, writer_options=cues, overwrite=overwrite,
            provenance=out.provenance,
            external={**det.external_data(), "provenance": out.provenance},
            detector={"model": model, "device": device, "flow_backend": flow_backend,
                      "weights": weights, "postprocess": post, "build_extractor": not use_features,
                      # "auto" resolved here: every worker computes in the same precision
                      "precision": det.extractor.options.precision if det.extractor else precision},
            use_features=use_features, annotations=annotations, fps=fps,
            feature_stride=feature_stride, window_frames=window_frames,
            threads=threads)
        local = None if ray_address is not None else DetectWorker(job, det, out, ann)
        report = run_job(items, job, desc="tal detect", progress=progress, problems=problems,
                         ray_address=ray_address, workers=workers,
                         gpus_per_worker=gpus_per_worker, local=local, busy_wait=busy_wait)
        _finish(out, report, items, local, use_features, ann, report_path, shard)
    finally:
        if claim is not None:
            from tal_pipeline.locks import release_claim

            release_claim(claim)
        out.close()


def _holds_features(folder: Path) -> str | None:
    """A feature file of tal extract in ``folder``, by name; None if there is none."""
    npy = next(folder.glob("*.npy"), None)
    return None if npy is None else f"{npy.name}, from tal extract"


def _lost(merged: dict | None, report) -> list[tuple[str, str]]:
    """Merged mode: the videos this run counted as done or skipped that the merged file does not
    hold (another run on the same output with other settings replaced their parts meanwhile):
    ``(path, cause)`` failures, so that exit status 0 never hides them."""
    held = set((merged or {}).get("results", {}))
    return [(report.paths.get(vid, vid), LOST) for vid in [*report.done, *report.skipped]
            if vid not in held]


LOST = ("its results were replaced by another run on this output with other settings (another "
        "--model or option) before the merge; run again alone")


def _finish(out: DetectionOutput, report, items, local, use_features, ann, report_path, shard=None) -> None:
    """After the batch: the failure list, the merge and the messages of ``tal detect``."""
    from tal_pipeline.batch import exit_if_failed, write_failures

    found = local.found if local is not None else _found(out, items, report)
    where = out.failures_path(shard)
    failures = write_failures(where.parent, report, where.name, required=False)
    if not out.split:
        # every finished video is in the merged file now: the parts are not needed to resume
        lost = _lost(out.merge(list(items)), report)
        if lost:
            for path, cause in lost:
                click.echo(f"tal: {path}: {cause}", err=True)
            gone = {p for p, _ in lost}
            report.done = [v for v in report.done if report.paths.get(v, v) not in gone]
            report.skipped = [v for v in report.skipped if report.paths.get(v, v) not in gone]
            report.failed.extend(lost)
            failures = write_failures(where.parent, report, where.name, required=False)
        out.close(remove_parts=True)
    click.echo(f"tal detect: {report.summary()} -> {', '.join(map(str, out.visible))}", err=True)
    if len(items) == 1 and found:
        (vid, video), = items.items()
        # the low-scoring segments are in the JSON record (x.json, DIR/<id>.json), which is
        # hidden when json is not among the formats (.x.vtt.json, DIR/.tal/<id>.json)
        _print_summary(video, next(iter(found.values())), out.part(vid) if out.split else out.path)
    if report_path is not None:
        from tal_pipeline.report import write_report

        videos = None if use_features else dict(items)
        write_report(out.path if not out.split else out.parts, videos, Path(report_path),
                     annotations=ann)
        click.echo(f"tal detect: report -> {report_path}", err=True)
    exit_if_failed("detect", report, failures)


def _print_summary(video, segments, record: Path, limit: int = 10) -> None:
    """One video: the segments a viewer would call detections (score >= the subtitle cue
    threshold), and how many lower-scoring ones its JSON ``record`` keeps for ranked evaluation."""
    from tal_pipeline.pipeline import summary_lines
    from tal_pipeline.writers import SUBTITLE_MIN_SCORE

    shown = [s for s in segments if s.score >= SUBTITLE_MIN_SCORE]
    click.echo(f"{video}: {len(shown)} detection{'s' if len(shown) != 1 else ''} "
               f"scoring >= {SUBTITLE_MIN_SCORE:g}")
    for line in summary_lines(shown, limit=limit):
        click.echo("  " + line)
    rest = len(segments) - len(shown)
    if rest:
        hidden = record.name.startswith(".") or record.parent.name == ".tal"
        click.echo(f"  ({rest} lower-scoring segment{'s' if rest != 1 else ''} kept in "
                   f"{'the hidden JSON record ' if hidden else ''}{record} for ranked evaluation)")


def _found(out: DetectionOutput, items, report) -> dict[str, list]:
    """--ray: the segments of a single video done now (for the summary), read from its record."""
    if len(items) != 1 or not report.done:
        return {}
    from tal_pipeline.results import load_results

    (vid,) = items
    return {vid: load_results(out.part(vid)).detections.get(vid, [])}
