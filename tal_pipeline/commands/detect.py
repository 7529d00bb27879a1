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
import os
import shutil
from pathlib import Path

import click

from tal_pipeline.commands.options import batch_options, npy_options, run_job
from tal_pipeline.errors import InputError

log = logging.getLogger(__name__)


class _Output:
    """Where per-video results go and what is already done (resume). ``close()`` when done.

    ``provenance``: what makes the results (:func:`provenance`), written with them; an output
    made otherwise is never skipped nor mixed in: a per-video file is refused (one line naming
    ``--overwrite``), a merged file before any work. A video's outputs (:meth:`outputs`) count
    as done only if each is valid: it parses, holds that video and has our provenance.
    """

    def __init__(self, output_arg: str, overwrite: bool, provenance: dict | None = None,
                 formats: tuple[str, ...] | None = None, writer_options=None, vids=(),
                 worker: bool = False):
        from tal_pipeline.batch import check_output_folder
        from tal_pipeline.fsutil import fit_name
        from tal_pipeline.locks import hold_lock
        from tal_pipeline.writers import WriterOptions, output_files

        self.path = Path(output_arg)
        self.split = output_arg.endswith(("/", os.sep)) or self.path.is_dir()
        self.writer_options = writer_options or WriterOptions()
        # files beside the JSON record: split mode, format -> per-video suffix; merged: -> file
        self.formats = tuple(formats or ("json",))
        self.files = {} if self.split else output_files(output_arg, formats)
        self.visible = [self.path] if self.split else list(self.files.values())  # for messages
        self.shown = self.visible[0]
        if not self.split:  # the JSON record: the requested .json, else hidden beside the first
            self.path = self.files.pop("json", None) or self.shown.with_name(f".{self.shown.name}.json")
        self.parts = self.path if self.split else self.path.with_name(self.path.name + ".parts")
        if self.split and "json" not in self.formats:
            self.parts = self.path / ".tal"
        self.overwrite = overwrite
        self.provenance = provenance
        self.previous = None  # merged mode: the results already in the output file
        self._seen: tuple | None = None  # (dev, inode, mtime, size) of the output file when read
        self.run_lock = None
        self._made: list[Path] = []  # folders made here: removed at close if left empty
        self._warned: set[str] = set()
        if worker:  # a --ray worker's view: the driver checked the output and holds its lock
            return
        if self.split and os.path.lexists(self.path) and not self.path.is_dir():
            raise InputError(f"-o {output_arg}: {self.path} exists and is not a folder")
        check_output_folder(self.parts if self.split else self.path.parent)
        self._check_kind()
        self._made = [q for q in (self.parts, *self.parts.parents) if not q.exists()]
        # merged mode: every run on this output holds this shared; only the last one to finish
        # (the only one that can make it exclusive) removes the parts folder
        self.run_lock = None if self.split else hold_lock(
            self.path.with_name(fit_name(".", self.parts.name, ".lock")), shared=True
        )
        try:
            self._refresh()
            self._check_one_video(output_arg, vids)
            self.parts.mkdir(parents=True, exist_ok=True)
        except BaseException:
            self.close()
            raise

    def _check_one_video(self, output_arg: str, vids) -> None:
        """A merged subtitle file holds one video: refuse more (this run's and those already
        in the output) before any work."""
        from tal_pipeline.errors import UsageError

        subtitles = sorted(set(self.files) & {"vtt", "srt"})
        vids = set(vids) | set(self.previous.detections if self.previous else ())
        if subtitles and len(vids) > 1:
            raise UsageError(f"-o {output_arg}: a .{subtitles[0]} file holds one video, this run has "
                             f"{len(vids)}; use -o DIR/ --format {','.join(self.formats)}")

    def _check_kind(self) -> None:
        """Detections never replace features (or anything not a results file): refuse a folder
        of feature files, or a merged output file that is not a results file."""
        from tal_pipeline.results import output_kind

        if self.split:
            feats = next(self.path.glob("*.npy"), None) if self.path.is_dir() else None
            if feats is not None:
                raise InputError(
                    f"-o {self.path}{os.sep}: the folder holds feature files ({feats.name}, from "
                    "tal extract); detections and features never share a folder: use another -o"
                )
            return
        kind = output_kind(self.path)
        if kind == "features":
            raise InputError(f"-o {self.path}: the file holds features (from tal extract), not "
                             "detections; use another -o")
        if kind == "other" or (kind == "unreadable" and not self.overwrite):
            raise InputError(f"-o {self.path}: the file exists and is not a tal detect results "
                             "file; use another -o" + (" or --overwrite" if kind == "unreadable" else ""))

    def _refresh(self) -> None:
        """Merged mode: (re)read the output file if it changed since (another run merged); one
        made with other settings is refused (StaleOutputError), so a merge never mixes them."""
        if self.split or self.overwrite:
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if key != self._seen and self.path.is_file():
            from tal_pipeline.results import load_results

            previous = load_results(self.path)
            if self.provenance is not None:
                from tal_pipeline.batch import check_provenance

                check_provenance(self.path, self.provenance, previous.external_data.get("provenance"))
            self.previous = previous
            self._seen = key

    def part(self, vid: str) -> Path:
        return self.parts / f"{vid}.json"

    def _video_files(self, vid: str) -> dict[str, Path]:
        """Split mode: format -> ``DIR/<vid>.<format>`` beside the JSON record; merged: none."""
        from tal_pipeline.writers import video_files

        return video_files(self.path, vid, [f for f in self.formats if f != "json"]) if self.split else {}

    def outputs(self, vid: str) -> list[Path]:
        """The files one video's results are written to (per video, or its part), its JSON
        record last (written last)."""
        return [*self._video_files(vid).values(), self.part(vid)]

    def write(self, vid: str, results: dict) -> None:
        """One video's results: every per-video file, atomically, the JSON record last."""
        from tal_pipeline.writers import write_all

        write_all({**self._video_files(vid), "json": self.part(vid)}, results, self.writer_options)

    def _valid(self, path: Path, vid: str) -> bool:
        """``path`` is a complete result of ``vid`` from our settings. A file that does not parse
        (cut short by something else) is redone; one of features is refused, never replaced;
        one from other settings is refused (StaleOutputError) in a per-video folder and redone
        in the parts folder (a killed run's, internal)."""
        from tal_pipeline.results import load_results, output_kind

        if path.suffix.lower() != ".json":  # vtt/srt/csv/tsv: atomic; the JSON record vouches
            return path.is_file()
        if output_kind(path) == "missing":
            return False
        self.check_replaceable(path)
        try:
            res = load_results(path)
        except InputError as err:
            self._warn(f"{err}; redoing it")
            return False
        if vid not in res.detections:
            self._warn(f"{path} does not hold the results of {vid}; redoing it")
            return False
        if self.provenance is not None:
            from tal_pipeline.batch import check_provenance, provenance_changes

            theirs = res.external_data.get("provenance")
            if self.split:
                check_provenance(path, self.provenance, theirs)
            elif provenance_changes(self.provenance, theirs):
                return False
        return True

    def _warn(self, message: str) -> None:
        if message not in self._warned:  # is_done is asked again under the video's lock
            self._warned.add(message)
            log.warning("%s", message)

    def is_done(self, vid: str) -> bool:
        if self.overwrite:
            for path in self.outputs(vid):  # redo, but never over a file of another kind
                if path.exists():
                    self.check_replaceable(path)
            return False
        if all(self._valid(path, vid) for path in self.outputs(vid)):
            return True
        self._refresh()
        return self.previous is not None and vid in self.previous.detections

    def check_replaceable(self, path: Path) -> None:
        """InputError unless ``path`` is missing, a results file, or not a complete JSON file."""
        from tal_pipeline.results import output_kind

        kind = output_kind(path)
        if kind in ("features", "other"):
            what = "features from tal extract" if kind == "features" else "another kind of file"
            raise InputError(f"{path} is not a tal detect result ({what}); it is never replaced: "
                             "use another -o")

    def close(self, remove_parts: bool = False) -> None:
        """Merged mode: let go of the run lock; ``remove_parts``: also remove the parts folder
        if no other run is on this output. Either mode: the folders made for the output are
        removed if left empty (every video failed). Idempotent."""
        lock, self.run_lock = self.run_lock, None
        last = lock is None or lock.try_exclusive()
        if last and remove_parts and not self.split:
            shutil.rmtree(self.parts, ignore_errors=True)
        if lock is not None:
            lock.release(unlink=last)
        if last:
            for folder in self._made:  # innermost first; nothing written: no folder left
                try:
                    folder.rmdir()
                except OSError:
                    break
            self._made = []

    def failures_path(self, shard: str | None = None) -> Path:
        """The failure list beside the outputs (``batch.failures_name``; merged mode: prefixed
        with the output file's name)."""
        from tal_pipeline.batch import failures_name

        name = failures_name(shard)
        return self.path / name if self.split else self.shown.with_name(f"{self.shown.name}.{name}")

    def merge(self, vids: list[str]) -> dict | None:
        """Merged mode: every finished video (parts of our settings + the output file as it is
        now) -> the output file, under its lock (concurrent runs merge one after the other).
        Nothing finished and no output file yet: nothing written, None."""
        from tal_pipeline.batch import provenance_changes
        from tal_pipeline.fsutil import remove_stale_temps
        from tal_pipeline.locks import hold_lock
        from tal_pipeline.results import load_results, make_results, write_results

        with hold_lock(self.path.with_name(f".{self.path.name}.lock")):
            remove_stale_temps(self.path.parent, [self.path.name, *(p.name for p in self.files.values())])
            self._refresh()
            per_video, meta, external = {}, {}, {}
            if self.previous is not None:
                per_video.update(self.previous.detections)
                meta.update(self.previous.videos)
                external.update(self.previous.external_data)
            fresh = 0
            for vid in vids:
                if not self.part(vid).is_file():
                    continue
                res = load_results(self.part(vid))
                theirs = res.external_data.get("provenance")
                if self.provenance is not None and provenance_changes(self.provenance, theirs):
                    continue  # a killed run's with other settings: never mixed in
                per_video.update(res.detections)
                meta.update(res.videos)
                external.update(res.external_data)
                fresh += 1
            if not fresh and self.previous is None:
                return None
            results = make_results(per_video, meta, external)
            from tal_pipeline.writers import write_all

            write_all(self.files, results, self.writer_options)  # other formats first: the
            write_results(self.path, results)  # JSON record, last, marks the merge complete
        return results


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
@click.option("--format", "formats", default=None, metavar="LIST",
              help="Comma-separated formats among json,vtt,srt,csv,tsv, written together [default: -o's "
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
@click.option("--min-score", type=float, default=None,
              help="Drop detections scoring below this [default: 0.001; vtt/srt cues: 0.3].")
@click.option("--top-k", type=int, default=200, show_default=True, help="At most this many detections per video.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="Also write a self-contained HTML report of the detections.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar (same as --no-progress).")
@batch_options
def command(inputs, output_arg, formats, model, use_features, fps, feature_stride, window_frames, annotations,
            device, flow_backend, weights, precision, min_score, top_k, overwrite, shard, report_path, progress,
            quiet, ray_address, workers, gpus_per_worker, threads):
    """Detect actions in INPUT (videos, folders or list files); write ActivityNet results JSON (or
    WebVTT, SRT, CSV, TSV: -o's extension or --format)."""
    from tal_pipeline.batch import VIDEO_EXTENSIONS, check_device, select_inputs
    from tal_pipeline.errors import UsageError
    from tal_pipeline.jobs import DetectJob, DetectWorker, default_threads, set_threads
    from tal_pipeline.pipeline import Detector
    from tal_pipeline.postprocess import PostprocessConfig

    if quiet:
        progress = False
    if top_k < 1:
        raise UsageError("--top-k must be >= 1")
    if min_score is not None and not 0 <= min_score <= 1:
        raise UsageError("--min-score must be within [0, 1]")
    from tal_pipeline.writers import SUBTITLE_MIN_SCORE, WriterOptions, parse_formats

    formats = parse_formats(formats)
    cues = WriterOptions(min_score=SUBTITLE_MIN_SCORE if min_score is None else min_score)
    check_device(device)
    problems: list = []  # folders that could not be walked: failures of this batch
    if use_features:
        items = select_inputs(inputs, shard, frozenset([".npy"]), ".npy feature files", problems)
    else:
        items = select_inputs(inputs, shard, VIDEO_EXTENSIONS, problems=problems)

    post = PostprocessConfig(min_score=0.001 if min_score is None else min_score, max_segments=top_k)
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
    out = _Output(output_arg, overwrite, provenance(det, use_features), formats, cues, list(items))
    try:
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
                         gpus_per_worker=gpus_per_worker, local=local)
        _finish(out, report, items, local, use_features, ann, report_path, shard)
    finally:
        out.close()


def _finish(out: _Output, report, items, local, use_features, ann, report_path, shard=None) -> None:
    """After the batch: the failure list, the merge and the messages of ``tal detect``."""
    from tal_pipeline.batch import exit_if_failed, write_failures

    found = local.found if local is not None else _found(out, items, report)
    where = out.failures_path(shard)
    failures = write_failures(where.parent, report, where.name, required=False)
    if not out.split:
        # every finished video is in the merged file now: the parts are not needed to resume
        out.merge(list(items))
        out.close(remove_parts=True)
    click.echo(f"tal detect: {report.summary()} -> {', '.join(map(str, out.visible))}", err=True)
    if len(items) == 1 and found:
        _print_summary(next(iter(items.values())), next(iter(found.values())), out.shown)
    if report_path is not None:
        from tal_pipeline.report import write_report

        videos = None if use_features else dict(items)
        write_report(out.path if not out.split else out.parts, videos, Path(report_path),
                     annotations=ann)
        click.echo(f"tal detect: report -> {report_path}", err=True)
    exit_if_failed("detect", report, failures)


def _print_summary(video, segments, where, limit: int = 10) -> None:
    """One video: the segments a viewer would call detections (score >= the subtitle cue
    threshold), and how many lower-scoring ones the output keeps for ranked evaluation."""
    from tal_pipeline.pipeline import summary_lines
    from tal_pipeline.writers import SUBTITLE_MIN_SCORE

    shown = [s for s in segments if s.score >= SUBTITLE_MIN_SCORE]
    click.echo(f"{video}: {len(shown)} detection{'s' if len(shown) != 1 else ''} "
               f"scoring >= {SUBTITLE_MIN_SCORE:g}")
    for line in summary_lines(shown, limit=limit):
        click.echo("  " + line)
    rest = len(segments) - len(shown)
    if rest:
        click.echo(f"  ({rest} lower-scoring segment{'s' if rest != 1 else ''} kept in {where} "
                   "for ranked evaluation)")


def _found(out: _Output, items, report) -> dict[str, list]:
    """--ray: the segments of a single video done now (for the summary), read from its record."""
    if len(items) != 1 or not report.done:
        return {}
    from tal_pipeline.results import load_results

    (vid,) = items
    return {vid: load_results(out.part(vid)).detections.get(vid, [])}


def detect_features(det, path: Path, vid: str, ann, fps, feature_stride, window_frames):
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
    detection = det.detect_features(arr, meta, video=str(path))
    return detection
