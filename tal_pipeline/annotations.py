"""Ground-truth annotations from ActivityNet/ActionFormer JSON or from a CSV/TSV table.

``load_annotations`` picks the reader by the file's extension: ``.csv`` (comma-separated) and
``.tsv`` (tab-separated) are tables, anything else is the JSON that
:func:`tal_pipeline.results.load_annotations` reads. Both give the same
:class:`~tal_pipeline.results.Annotations`.

A table has a header row naming its columns (any order, case-insensitive)::

    video_id,label,start,end,subset,duration
    clip01,pan_left,3.0,8.0,training,25.0
    clip01,zoom_in,18.0,22.0,training,25.0
    clip02,,,,validation,30.0

``video_id``, ``label``, ``start`` and ``end`` are required; ``subset`` and ``duration`` (s)
are optional (a video's rows must agree on them; without a duration the features' length is
used). Numbers are ASCII decimals (``12.5``, ``1e3``): Python's ``float`` would also take
``1_000`` and other scripts' digits (``١٢``), which no spreadsheet writes; they are refused. ``score`` is allowed and ignored, so the CSV ``tal detect`` writes can be edited and fed
back as ground truth. Times are seconds (``12.5``) or ``[h:]m:ss[.fff]``. A row whose label,
start and end are all empty declares a video without actions. Blank lines are skipped.

Any wrong column, unparsable or non-finite time, negative time or end before start is an
:class:`~tal_pipeline.errors.InputError` naming the file, the line and the cause, e.g.
``ann.csv: line 7: end 3.2 is before start 4.0``.

Zero-length segments (start = end, in a table or in JSON; real ActivityNet files have a few) are
read, with one warning naming the file: no detection can match one (tIoU 0), so ``tal eval``
counts it as missed, as the official ActivityNet code does; ``tal train`` leaves it out
(:func:`without_zero_length`), since a target without length teaches nothing.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from tal_pipeline.errors import InputError
from tal_pipeline.results import Annotations, VideoAnnotation, user_file
from tal_pipeline.safety import restore_cell

log = logging.getLogger(__name__)

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}  # extension -> delimiter
# a decimal number as people and spreadsheets write it: ASCII digits, no "_" separators
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
REQUIRED_COLUMNS = ("video_id", "label", "start", "end")
OPTIONAL_COLUMNS = ("subset", "duration", "score")  # score: ignored (tal detect's CSV has it)


def load_annotations(path, subset: str | Iterable[str] | None = None) -> Annotations:
    """Read ground truth from a JSON file (or dict), or a ``.csv``/``.tsv`` table; keep the
    videos of ``subset`` (case-insensitive, comma-separated for several; None keeps all).

    Raises:
        InputError: unreadable file, schema error (naming where), or no video in ``subset``.
    """
    if not isinstance(path, Mapping) and Path(path).suffix.lower() in TABLE_SUFFIXES:
        ann = read_table(path).select(subset)
    else:
        from tal_pipeline.results import load_annotations as load_json

        ann = load_json(path, subset)
    _warn_zero_length(ann)
    return ann


def zero_length(ann: Annotations) -> list[tuple[str, int, str, float]]:
    """The zero-length segments (start = end): ``(video id, index in the video, label, time s)``."""
    return [(vid, k, label, t0) for vid, v in ann.videos.items()
            for k, (label, t0, t1) in enumerate(v.segments) if t1 == t0]


def _warn_zero_length(ann: Annotations) -> None:
    found = zero_length(ann)
    if found:
        vid, k, label, t = found[0]
        log.warning("%s: %d zero-length ground-truth segment%s (start = end; first: video %r, "
                    "segment %d, %s at %g s): no detection can match one; tal eval counts them "
                    "as missed, tal train leaves them out", ann.source, len(found),
                    "s" if len(found) != 1 else "", vid, k, label, t)


def without_zero_length(ann: Annotations) -> Annotations:
    """``ann`` without its zero-length segments (training: a target without length)."""
    from dataclasses import replace

    return Annotations({vid: replace(v, segments=tuple(s for s in v.segments if s[2] > s[1]))
                        for vid, v in ann.videos.items()}, ann.source)


def parse_number(text: str) -> float:
    """``"12.5"``, ``"-3"``, ``"1e3"`` -> float; ValueError for anything else, including what
    ``float`` alone would take: ``"1_000"``, non-ASCII digits, ``"nan"``, ``"inf"``, spaces inside."""
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"not a number: {text!r}")
    return float(text)


def as_annotations(annotations) -> Annotations | None:
    """``None``, an :class:`Annotations` as it is, or loaded from a path or a dict."""
    if annotations is None or isinstance(annotations, Annotations):
        return annotations
    return load_annotations(annotations)


def parse_time(text: str) -> float:
    """``"12.5"`` or ``"1:02.5"`` or ``"0:01:02.5"`` -> seconds; ValueError when it is none of
    those, not finite or negative."""
    parts = text.strip().split(":")
    if len(parts) > 3 or any(not p.strip() for p in parts):
        raise ValueError
    if len(parts) > 1 and any(p.strip()[0] in "+-" for p in parts):  # a sign inside a clock
        raise ValueError
    seconds = 0.0
    for k, p in enumerate(parts):
        v = parse_number(p)
        if k < len(parts) - 1 and (v != int(v) or v < 0):  # hours, minutes: whole numbers
            raise ValueError
        if k > 0 and v >= 60:  # minutes and seconds after a colon stay below 60
            raise ValueError
        seconds = seconds * 60.0 + v
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError
    return seconds


def read_table(path) -> Annotations:
    """Read a CSV (``.csv``) or TSV (any other name) annotation table (module docstring)."""
    path = Path(path)
    delimiter = TABLE_SUFFIXES.get(path.suffix.lower(), "\t")
    try:  # -sig: Excel's byte-order mark
        with user_file(path, "a CSV file"), open(path, encoding="utf-8-sig", newline="") as f:
            return _parse_rows(str(path), csv.reader(f, delimiter=delimiter, strict=True), delimiter)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    except csv.Error as err:
        raise InputError(f"{path}: not a valid table: {err}") from None


def _header(name: str, row: list[str], delimiter: str) -> dict[str, int]:
    """Column name -> index, validated."""
    cols = [c.strip().lower() for c in row]
    sep = "commas" if delimiter == "," else "tabs"
    if len(cols) == 1 and any(ch in cols[0] for ch in ",;\t"):
        raise InputError(
            f"{name}: line 1: one column {row[0]!r}; expected columns separated by {sep}: "
            f"{','.join(REQUIRED_COLUMNS)}[,subset,duration]"
        )
    unknown = [c for c in cols if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise InputError(
            f"{name}: line 1: unknown column(s) {', '.join(map(repr, unknown))}; expected "
            f"{','.join(REQUIRED_COLUMNS)} and optionally {', '.join(OPTIONAL_COLUMNS[:2])}"
        )
    twice = sorted({c for c in cols if cols.count(c) > 1})
    if twice:
        raise InputError(f"{name}: line 1: column(s) {', '.join(map(repr, twice))} given twice")
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    if missing:
        raise InputError(
            f"{name}: line 1: missing column(s) {', '.join(map(repr, missing))}; the header must "
            f"name {','.join(REQUIRED_COLUMNS)} (optional: subset, duration)"
        )
    return {c: k for k, c in enumerate(cols)}


def _parse_rows(name: str, reader, delimiter: str) -> Annotations:
    header = None
    segments: dict[str, list[tuple[str, float, float]]] = {}
    subsets: dict[str, tuple[str, int]] = {}  # video -> (subset, line that set it)
    durations: dict[str, tuple[float, int]] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = _header(name, row, delimiter)
            continue
        if len(row) != len(header):
            raise InputError(
                f"{name}: line {line}: {len(row)} field(s), the header has {len(header)}"
            )
        cells = {col: row[k].strip() for col, k in header.items()}
        # text cells as tal convert neutralised them for spreadsheets (safety.neutralise_cell)
        vid, label = restore_cell(cells["video_id"]), restore_cell(cells["label"])
        if not vid:
            raise InputError(f"{name}: line {line}: empty video_id")
        times = []
        for col in ("start", "end"):
            text = cells.get(col, "")
            try:
                times.append(parse_time(text) if text or label else None)
            except ValueError:
                raise InputError(
                    f"{name}: line {line}: {col} {text!r} is not a time (seconds >= 0 in ASCII digits, "
                    "e.g. 12.5, or [h:]m:ss.fff)"
                ) from None
        segments.setdefault(vid, [])
        if label or times != [None, None]:
            t0, t1 = times
            if not label:
                raise InputError(f"{name}: line {line}: empty label (a row with times needs one)")
            if t1 < t0:
                raise InputError(f"{name}: line {line}: end {t1:g} is before start {t0:g}")
            segments[vid].append((label, t0, t1))
        for col, seen in (("subset", subsets), ("duration", durations)):
            text = cells.get(col, "")
            if not text:
                continue
            value: str | float = text
            if col == "duration":
                try:
                    value = parse_number(text)
                    if not math.isfinite(value) or value < 0:
                        raise ValueError
                except ValueError:
                    raise InputError(
                        f"{name}: line {line}: duration {text!r} is not a number of seconds >= 0"
                    ) from None
            if vid in seen and seen[vid][0] != value:
                raise InputError(
                    f"{name}: line {line}: {col} {text!r} of video {vid!r} differs from "
                    f"{seen[vid][0]!r} on line {seen[vid][1]}"
                )
            seen.setdefault(vid, (value, line))
    if header is None:
        raise InputError(f"{name}: empty file; expected a header row {','.join(REQUIRED_COLUMNS)}")
    if not segments:
        raise InputError(f"{name}: no rows after the header")
    videos = {}
    for vid, segs in segments.items():
        duration = durations[vid][0] if vid in durations else 0.0  # 0: unknown
        late = [t1 for _, _, t1 in segs if duration and t1 > duration + 1e-6]
        if late:
            raise InputError(
                f"{name}: video {vid!r}: an action ends at {max(late):g} s, after its duration "
                f"{duration:g} s (line {durations[vid][1]})"
            )
        videos[vid] = VideoAnnotation(
            float(duration), subsets[vid][0] if vid in subsets else "", None, tuple(segs)
        )
    return Annotations(videos, name)
