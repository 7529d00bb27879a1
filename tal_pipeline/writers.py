"""Output writers: one per format, all rendered from the same in-memory results object.

The results object is what :func:`tal_pipeline.results.make_results` builds (the ActivityNet
results schema plus per-video metadata); ``tal detect`` and ``tal convert`` pass it here.

========  ================================================================================
format    what it holds
========  ================================================================================
``json``  the results object itself: every video, the full ranked list (the reference)
``vtt``   WebVTT for one video: one cue per segment, ``label (score)``, for ``<track>``, VLC, mpv
``srt``   SubRip for one video: the same cues
``csv``   ``video_id,label,start,end,score``, a header row, seconds with 3 decimals, every video
``tsv``   the same, tab-separated
========  ================================================================================

Subtitle formats (``vtt``, ``srt``) show what a viewer should see, not a ranked list: segments
scoring below :attr:`WriterOptions.min_score` get no cue, and overlapping segments of one label
become one cue (their union, with the best score), so a player never stacks the dozens of
near-duplicates Soft-NMS keeps for evaluation. JSON, CSV and TSV keep every segment, in the
results' order. Subtitles and tables take only segments with 0 <= start <= end <= 72 h and
scores within [0, 1] (:func:`check_segments`); JSON, the reference, takes any finite numbers.
Every file goes out through ``safety.write_bytes``: atomically, never over a file of another
kind, an input of the run or a device (docs/hostile_inputs.md, "Output safety: the rules").
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tal_pipeline.errors import InputError
from tal_pipeline.postprocess import Segment

FORMATS = ("json", "vtt", "srt", "csv", "tsv")  # the order files are written in
SUBTITLE_FORMATS = frozenset({"vtt", "srt"})  # one video per file; thresholded, merged cues
SUBTITLE_MIN_SCORE = 0.3  # probability; the demo's real motions score > 0.9, its Soft-NMS
#                           leftovers < 0.2 (see the README's example output)
TABLE_COLUMNS = ("video_id", "label", "start", "end", "score")  # csv/tsv header
KIND = {"json": "results", "vtt": "vtt", "srt": "srt", "csv": "table", "tsv": "table"}  # safety kind
MAX_TIME_S = 72 * 3600.0  # seconds: the longest video decode accepts (decode.MAX_DURATION_S)


@dataclass(frozen=True)
class WriterOptions:
    """How the writers render a results object."""

    min_score: float = SUBTITLE_MIN_SCORE  # vtt/srt: segments scoring below this get no cue
    merge_cues: bool = True  # vtt/srt: overlapping segments of one label -> one cue
    time_decimals: int = 3  # csv/tsv: digits after the point for seconds (ms)
    score_decimals: int = 4  # csv/tsv and cue text use fewer (2)


def format_of(path: str | Path) -> str | None:
    """The format a file name asks for by its extension (``out.vtt`` -> ``"vtt"``), or None."""
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else None


def parse_formats(text: str | None) -> tuple[str, ...] | None:
    """``"vtt,csv"`` -> ``("vtt", "csv")`` (validated, duplicates dropped); None stays None."""
    if text is None:
        return None
    names = [t.strip().lower().lstrip(".") for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise InputError(
            f"--format: unknown format {', '.join(bad) or repr(text)}; choose from {', '.join(FORMATS)}"
        )
    return tuple(dict.fromkeys(names))


def output_files(output: str | Path, formats: Sequence[str] | None) -> dict[str, Path]:
    """Format -> file for a single-file output ``-o OUTPUT`` (not a folder).

    Without ``formats`` the extension picks the format (an unknown extension means JSON, so
    ``-o results`` keeps writing JSON there). With ``formats``, each format gets OUTPUT with
    that format's extension (``-o out.json --format json,vtt`` -> ``out.json``, ``out.vtt``;
    ``-o out --format csv`` -> ``out.csv``).
    """
    path = Path(output)
    own = format_of(path)
    if formats is None:
        return {own or "json": path}
    stem = path.with_suffix("") if own else path
    return {f: path if f == own else stem.with_name(f"{stem.name}.{f}") for f in formats}


def video_files(folder: str | Path, video_id: str, formats: Sequence[str]) -> dict[str, Path]:
    """Format -> file for one video in a folder output (``-o DIR/``): ``DIR/<id>.<format>``, the
    id made a safe file name that stays in DIR (``safety.file_in``)."""
    from tal_pipeline.safety import file_in

    return {f: file_in(folder, video_id, f".{f}") for f in formats}


# ---------------------------------------------------------------- cues


def _segments(entries: Iterable) -> list[Segment]:
    """Results entries (``{"label", "score", "segment"}`` dicts or Segments) as Segments."""
    return [e if isinstance(e, Segment) else Segment.from_json(e) for e in entries]


def subtitle_cues(entries: Iterable, options: WriterOptions = WriterOptions()) -> list[Segment]:
    """The cues of one video: segments scoring at least ``options.min_score``; with
    ``merge_cues``, overlapping (or touching) segments of one label joined into one cue that
    spans them and carries their best score. Sorted by start, then end, then label (WebVTT
    wants cue start times in order). Empty or inverted segments get no cue."""
    keep = [s for s in _segments(entries) if s.score >= options.min_score and s.end > s.start]
    if not options.merge_cues:
        return sorted(keep, key=lambda s: (s.start, s.end, s.label))
    by_label: dict[str, list[Segment]] = {}
    for s in keep:
        by_label.setdefault(s.label, []).append(s)
    cues = []
    for label, segs in by_label.items():
        segs.sort(key=lambda s: s.start)
        cur = segs[0]
        for s in segs[1:]:
            if s.start <= cur.end:  # overlaps the cue so far: grow it
                cur = Segment(label, max(cur.score, s.score), cur.start, max(cur.end, s.end))
            else:
                cues.append(cur)
                cur = s
        cues.append(cur)
    return sorted(cues, key=lambda s: (s.start, s.end, s.label))


def cue_text(seg: Segment, fmt: str = "vtt") -> str:
    """``label (0.97)`` on one line (a newline would end the cue). WebVTT: ``&``, ``<``, ``>``
    escaped as entities (so no ``-->`` either). SubRip has no entities (players show ``&amp;``
    as it is): the label is written raw, tags included, with ``-->`` written ``->`` so a cue
    line never reads as a timing line."""
    label = " ".join(seg.label.split())  # newlines would end the cue
    if fmt == "srt":
        label = label.replace("-->", "->")
    else:
        label = label.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"{label} ({seg.score:.2f})"


def _ms(t: float) -> int:
    return max(0, round(float(t) * 1000.0))


def _clock(ms: int, sep: str) -> str:
    """Milliseconds as ``HH:MM:SS<sep>mmm`` (WebVTT: ``.``, SubRip: ``,``)."""
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _timed_cues(entries, options: WriterOptions, fmt: str) -> list[tuple[int, int, str]]:
    """(start ms, end ms, text) per cue; cues that round to nothing are left out."""
    out = []
    for c in subtitle_cues(entries, options):
        t0, t1 = _ms(c.start), _ms(c.end)
        if t1 > t0:
            out.append((t0, t1, cue_text(c, fmt)))
    return out


def check_segments(results: Mapping, fmt: str) -> None:
    """InputError, one line naming the video and the segment, unless every segment has
    ``0 <= start <= end <= MAX_TIME_S`` and ``0 <= score <= 1``: what a subtitle or table
    shows must be a time in a video and a probability (a detector's own output always is;
    a foreign file with logits or negative times is refused, never clamped)."""
    for vid, entries in results.get("results", {}).items():
        for k, s in enumerate(_segments(entries)):
            where = f"results[{vid!r}][{k}]"
            if not (0.0 <= s.start <= s.end <= MAX_TIME_S):
                raise InputError(f"{where}: segment [{s.start:g}, {s.end:g}] s is not within "
                                 f"[0, {MAX_TIME_S:g}] s (72 h); a .{fmt} file takes times in a video")
            if not (0.0 <= s.score <= 1.0):
                raise InputError(f"{where}: score {s.score:g} is not within [0, 1]; a .{fmt} file "
                                 "takes probabilities")


# ---------------------------------------------------------------- renderers (results -> text)


def _one_video(results: Mapping, fmt: str) -> tuple[str, list]:
    per_video = results.get("results", {})
    if len(per_video) != 1:
        raise InputError(
            f"a .{fmt} file holds one video, the results hold {len(per_video)}; "
            f"write one file per video with -o DIR/ --format {fmt}"
        )
    ((vid, entries),) = per_video.items()
    return vid, entries


def render_json(results: Mapping, options: WriterOptions = WriterOptions()) -> str:
    """The results object as JSON text (what :func:`tal_pipeline.results.write_results` writes)."""
    return json.dumps(dict(results), indent=2, ensure_ascii=False) + "\n"


def render_vtt(results: Mapping, options: WriterOptions = WriterOptions()) -> str:
    """WebVTT of the results' only video: a ``NOTE`` naming it, then one cue per cue."""
    vid, entries = _one_video(results, "vtt")
    note = " ".join(str(vid).replace("-->", "->").split())
    blocks = ["WEBVTT", f"NOTE tal-pipeline detections of {note}, score >= {options.min_score:g}"]
    for k, (t0, t1, text) in enumerate(_timed_cues(entries, options, "vtt"), 1):
        blocks.append(f"{k}\n{_clock(t0, '.')} --> {_clock(t1, '.')}\n{text}")
    return "\n\n".join(blocks) + "\n"


def render_srt(results: Mapping, options: WriterOptions = WriterOptions()) -> str:
    """SubRip of the results' only video: numbered cues from 1."""
    _, entries = _one_video(results, "srt")
    blocks = [
        f"{k}\n{_clock(t0, ',')} --> {_clock(t1, ',')}\n{text}"
        for k, (t0, t1, text) in enumerate(_timed_cues(entries, options, "srt"), 1)
    ]
    return "\n\n".join(blocks) + "\n" if blocks else ""


def _render_table(results: Mapping, options: WriterOptions, delimiter: str) -> str:
    """The rows; text cells (video id, label) neutralised for spreadsheets
    (``safety.neutralise_cell``: ``=1+1`` is written ``'=1+1``), numbers written as they are."""
    from tal_pipeline.safety import neutralise_cell

    buf = io.StringIO()
    w = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
    w.writerow(TABLE_COLUMNS)
    td, sd = options.time_decimals, options.score_decimals
    for vid, entries in results.get("results", {}).items():
        for s in _segments(entries):
            text = [neutralise_cell(vid), neutralise_cell(s.label)]
            numbers = [f"{s.start:.{td}f}", f"{s.end:.{td}f}", f"{s.score:.{sd}f}"]
            if any("\r" in t for t in text):  # Python's csv quotes only the line terminator's
                # characters: a lone CR, unquoted, would end the row in every reader
                buf.write(delimiter.join(['"' + t.replace('"', '""') + '"' for t in text] + numbers) + "\n")
            else:
                w.writerow(text + numbers)
    return buf.getvalue()


def render_csv(results: Mapping, options: WriterOptions = WriterOptions()) -> str:
    """``video_id,label,start,end,score`` rows, every video and segment in the results' order."""
    return _render_table(results, options, ",")


def render_tsv(results: Mapping, options: WriterOptions = WriterOptions()) -> str:
    """As :func:`render_csv`, tab-separated."""
    return _render_table(results, options, "\t")


RENDERERS: dict[str, Callable[[Mapping, WriterOptions], str]] = {
    "json": render_json,
    "vtt": render_vtt,
    "srt": render_srt,
    "csv": render_csv,
    "tsv": render_tsv,
}


def render(results: Mapping, fmt: str, options: WriterOptions = WriterOptions()) -> str:
    """The results object as the text of format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in RENDERERS:
        raise InputError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")
    if not (0.0 <= options.min_score <= 1.0) or math.isnan(options.min_score):
        raise InputError(f"minimum cue score must be within [0, 1], got {options.min_score}")
    if fmt != "json":
        check_segments(results, fmt)
    return RENDERERS[fmt](results, options)


def write(path: str | Path, results: Mapping, fmt: str | None = None,
          options: WriterOptions = WriterOptions(), inputs=None) -> Path:
    """Render ``results`` as ``fmt`` (default: from ``path``'s extension, else JSON) and write
    it to ``path`` (``safety.write_text``); creates parent folders. Returns the path."""
    fmt = fmt or format_of(path) or "json"
    return write_all({fmt: Path(path)}, results, options, inputs)[0]


def write_all(files: Mapping[str, Path], results: Mapping,
              options: WriterOptions = WriterOptions(), inputs=None) -> list[Path]:
    """Write ``results`` once per format -> file; every file is rendered and checked
    (``safety.check_target``: kind, ``inputs`` = a ``safety.Inputs`` of the run) before the
    first is written, so a results object a format refuses leaves no file behind. JSON is
    written last: with JSON among the outputs, its presence means every other file is complete."""
    from tal_pipeline.safety import NO_INPUTS, check_target, write_text

    inputs = inputs or NO_INPUTS
    texts = {fmt: render(results, fmt, options) for fmt in files}
    for fmt, path in files.items():
        check_target(path, KIND[fmt], inputs)
    order = sorted(files, key=lambda f: (f == "json", FORMATS.index(f)))
    return [write_text(files[f], texts[f], KIND[f], inputs) for f in order]
