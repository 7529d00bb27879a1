"""Where ``tal detect`` puts one batch's results, and what in it is already done (resume).

``-o DIR/``: ``DIR/<video_id>.json`` (and one file per other requested format) per video.
``-o x.json`` (or ``x.vtt``, ...): one merged file; each finished video is first kept in
``x.json.parts/`` so an interrupted run resumes there, and the driver merges at the end.
:class:`DetectionOutput` is that layout, its resume check (a done output parses, holds the video
and has our provenance), its atomic writes, the run lock of the merged form, and the merge.
A ``--ray`` worker builds it with ``worker=True``: the driver checked the output and holds the lock.
Every file goes out through ``safety`` (names that stay in DIR, never over an input of the run,
a file of another kind or a device; docs/hostile_inputs.md, "Output safety: the rules").
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from tal_pipeline.errors import InputError

log = logging.getLogger(__name__)


class DetectionOutput:
    """Where per-video results go and what is already done (resume). ``close()`` when done.

    ``provenance``: what makes the results (:func:`provenance`), written with them; an output
    made otherwise is never skipped nor mixed in: a per-video file is refused (one line naming
    ``--overwrite``), a merged file before any work. A video's outputs (:meth:`outputs`) count
    as done only if each is valid: it parses, holds that video and has our provenance.
    """

    def __init__(self, output_arg: str, overwrite: bool, provenance: dict | None = None,
                 formats: tuple[str, ...] | None = None, writer_options=None, vids=(),
                 worker: bool = False, inputs=(), report=None):
        """``inputs``: the run's input files (videos, feature files, the model, annotations),
        never outputs; ``report``: the ``--report`` page, checked here before any work."""
        from tal_pipeline.batch import check_output_folder
        from tal_pipeline.fsutil import fit_name
        from tal_pipeline.locks import hold_lock
        from tal_pipeline.safety import Inputs, check_output_arg, check_target
        from tal_pipeline.writers import WriterOptions, output_files

        self.path = Path(check_output_arg(output_arg))
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
        self._cut_short = False  # merged: the output file was cut short (redone, not read)
        self._seen_cut: tuple | None = None  # its (dev, inode, mtime, size) then
        self.run_lock = None
        self._made: list[Path] = []  # folders made here: removed at close if left empty
        self._warned: set[str] = set()
        # a worker rebuilds this from the driver's arguments: the driver checked the inputs
        self.inputs = Inputs() if worker else Inputs.of(inputs)
        if worker:  # a --ray worker's view: the driver checked the output and holds its lock
            return
        if self.split and os.path.lexists(self.path) and not self.path.is_dir():
            raise InputError(f"-o {output_arg}: {self.path} exists and is not a folder")
        check_output_folder(self.parts if self.split else self.path.parent)
        self._check_kind()
        if report is not None:
            self._check_report(output_arg, Path(report), check_target)
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
        ours = set(vids)  # this run's inputs; then the other videos the output holds already
        before = set(self.previous.detections if self.previous else ()) - ours
        if subtitles and len(ours | before) > 1:
            held = (f", and {self.shown} already holds {len(before)} other video"
                    f"{'s' if len(before) != 1 else ''}") if before else ""
            raise UsageError(f"-o {output_arg}: a .{subtitles[0]} file holds one video; this run has "
                             f"{len(ours)} input{'s' if len(ours) != 1 else ''}{held}; use -o DIR/ "
                             f"--format {','.join(self.formats)}")

    def _check_kind(self) -> None:
        """Detections never replace features, an input or anything not of their own kind
        (``safety.check_target``): refuse a folder of feature files, or a merged output file
        (any of its formats) that may not be written. A merged results file cut short is redone."""
        from tal_pipeline.safety import check_target, is_cut_short
        from tal_pipeline.writers import KIND

        if self.split:
            feats = next(self.path.glob("*.npy"), None) if self.path.is_dir() else None
            if feats is not None:
                raise InputError(
                    f"-o {self.path}{os.sep}: the folder holds feature files ({feats.name}, from "
                    "tal extract); detections and features never share a folder: use another -o"
                )
            return
        for fmt, path in (*self.files.items(), ("json", self.path)):
            check_target(path, KIND[fmt], self.inputs)
        if is_cut_short(self.path):
            self._warn(f"{self.path}: cut short (not complete JSON); its results are redone")

    def _check_report(self, output_arg: str, report: Path, check_target) -> None:
        """``--report`` is a page of its own: never one of the results files, never over a file
        of another kind or an input; before any work."""
        from tal_pipeline.errors import UsageError

        mine = [self.path] if self.split else [self.path, *self.files.values()]
        if any(os.path.abspath(report) == os.path.abspath(p) for p in mine):
            raise UsageError(f"--report {report}: also an output of -o {output_arg}; name another file")
        check_target(report, "report", self.inputs)

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
        if self._cut_short and key == self._seen_cut:
            return  # still the file cut short: nothing to keep from it
        if key != self._seen and self.path.is_file():
            from tal_pipeline.safety import is_cut_short

            if is_cut_short(self.path):
                self._cut_short, self._seen_cut = True, key
                return
            from tal_pipeline.results import load_results

            previous = load_results(self.path)
            if self.provenance is not None:
                from tal_pipeline.batch import check_provenance

                check_provenance(self.path, self.provenance, previous.external_data.get("provenance"))
            self.previous = previous
            self._seen = key

    def part(self, vid: str) -> Path:
        """The JSON record of ``vid`` (``safety.file_in``: a name that stays in the folder)."""
        from tal_pipeline.safety import file_in

        return file_in(self.parts, vid, ".json")

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

        write_all({**self._video_files(vid), "json": self.part(vid)}, results, self.writer_options,
                  self.inputs)

    def _valid(self, path: Path, vid: str) -> bool:
        """``path`` is a complete result of ``vid`` from our settings. A file that does not parse
        (cut short by something else) is redone; one of features is refused, never replaced;
        one from other settings is refused (StaleOutputError) in a per-video folder and redone
        in the parts folder (a killed run's, internal)."""
        from tal_pipeline.results import load_results

        if path.suffix.lower() != ".json":  # vtt/srt/csv/tsv: atomic; the JSON record vouches
            return path.is_file()
        if not os.path.lexists(path):
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
        """InputError unless ``path`` may be written by this run (``safety.check_target``: its
        kind by its format, not an input, not a device; a results file cut short may be)."""
        from tal_pipeline.safety import check_target
        from tal_pipeline.writers import KIND, format_of

        check_target(path, KIND[format_of(path) or "json"], self.inputs)

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

            write_all(self.files, results, self.writer_options, self.inputs)  # other formats
            write_results(self.path, results, self.inputs)  # first; the JSON record, last, marks
            # the merge complete
        return results
