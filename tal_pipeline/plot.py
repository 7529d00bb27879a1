"""Timeline plots of detections (``tal plot``): one panel per video, time in seconds across.

Each panel stacks, top to bottom:

* the detections, one bar per segment, coloured by class, opaque in proportion to the score,
  overlapping segments stacked in lanes (greedy interval partitioning, at most
  ``max_lanes`` lanes; the rest overlap in the lane that frees up first);
* the ground truth, when annotations are given, in its own lanes under a rule;
* a strip of actionness over time when the results carry one for the video (optional key of
  the results file, see below).

Optional per-video curve in a results file (``tal detect`` does not write one; results made by
other tools, or a user's own scoring, may carry it)::

    "videos": {"<video_id>": {..., "actionness": {"t0": 0.8, "step": 0.4, "values": [0.1, ...]}}}

``t0`` (s) is the time of the first value, ``step`` (s) the spacing; ``"times": [...]`` may
replace ``t0``/``step``. Values are in [0, 1].

The figure has a fixed size (no tight bounding box), so a data point maps to a known pixel:
``ax.transData`` of the returned :class:`Timeline` gives it (origin at the bottom left).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tal_pipeline.safety import PLOT_MARK

log = logging.getLogger(__name__)

# Class colours: matplotlib's tab10 then the light half of tab20 (hex, so the HTML report can
# use the same colours without importing matplotlib). More classes than colours: hues cycle.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
    "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip

MIN_ALPHA = 0.2  # opacity of a score-0 bar; a score-1 bar is opaque


@dataclass(frozen=True)
class PlotOptions:
    """How ``tal plot`` draws a timeline."""

    min_score: float = 0.0  # detections scoring below this are not drawn
    max_lanes: int = 12  # lanes of stacked detections per video; more overlap share lanes
    max_videos: int = 20  # panels per figure (the first ones, in file order); 0 = no limit
    width_in: float = 14.0  # figure width, inches
    dpi: int = 100  # pixels per inch of the PNG
    lane_in: float = 0.16  # height of one lane, inches
    strip_in: float = 0.45  # height of the actionness strip, inches
    min_bar_px: float = 1.5  # narrower segments are widened to this many pixels (long videos)


@dataclass(frozen=True)
class Bar:
    """One drawn bar, in data coordinates of its panel's axes."""

    kind: str  # "pred" or "gt"
    label: str
    score: float  # 1.0 for ground truth
    start: float  # seconds
    end: float  # seconds
    y0: float  # bottom of the bar (axes data units)
    y1: float  # top of the bar
    color: str  # hex, before the score's opacity


@dataclass
class Timeline:
    """A drawn figure and where things are in it (tests map bars to pixels with it)."""

    figure: object  # matplotlib.figure.Figure
    axes: dict[str, object] = field(default_factory=dict)  # video id -> segments Axes
    strips: dict[str, object] = field(default_factory=dict)  # video id -> actionness Axes
    bars: dict[str, list[Bar]] = field(default_factory=dict)  # video id -> drawn bars
    colors: dict[str, str] = field(default_factory=dict)  # label -> hex colour


# ---------------------------------------------------------------- layout helpers (no matplotlib)


def class_colors(labels: Iterable[str]) -> dict[str, str]:
    """label -> hex colour, stable for a given set of labels (sorted, then the palette)."""
    names = sorted(set(labels))
    out = {}
    for k, name in enumerate(names):
        if k < len(PALETTE):
            out[name] = PALETTE[k]
        else:  # golden-ratio hue walk: distinct enough, deterministic
            import colorsys

            r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.65, 0.85)
            out[name] = f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"
    return out


def assign_lanes(
    intervals: Sequence[tuple[float, float]], max_lanes: int = 12
) -> tuple[list[int], int]:
    """Stack intervals in lanes so that intervals in one lane do not overlap.

    Greedy interval partitioning by start time (optimal: uses as many lanes as the deepest
    overlap), capped at ``max_lanes``; past the cap an interval goes to the lane that frees up
    first (it overlaps there).

    Args:
        intervals: ``(start, end)`` pairs in seconds, any order.
        max_lanes: most lanes to use (>= 1).

    Returns:
        (lane index per interval, in input order; number of lanes used).
    """
    max_lanes = max(1, int(max_lanes))
    order = sorted(range(len(intervals)), key=lambda i: (intervals[i][0], intervals[i][1]))
    lane_end: list[float] = []  # lane -> end of its last interval
    lanes = [0] * len(intervals)
    for i in order:
        t0, t1 = intervals[i]
        free = [k for k, e in enumerate(lane_end) if e <= t0]
        if free:
            k = free[0]
        elif len(lane_end) < max_lanes:
            k = len(lane_end)
            lane_end.append(-math.inf)
        else:
            k = min(range(len(lane_end)), key=lane_end.__getitem__)
        lanes[i] = k
        lane_end[k] = max(lane_end[k], t1)
    return lanes, len(lane_end)


def actionness_curve(meta: Mapping | None) -> tuple[list[float], list[float]] | None:
    """The optional ``actionness`` curve of a video's metadata as (times s, values), or None."""
    if not isinstance(meta, Mapping):
        return None
    curve = meta.get("actionness")
    if not isinstance(curve, Mapping):
        return None
    values = curve.get("values")
    if not isinstance(values, list) or not values:
        return None
    try:
        vals = [float(v) for v in values]
        if isinstance(curve.get("times"), list):
            times = [float(t) for t in curve["times"]]
            if len(times) != len(vals):
                return None
        else:
            t0, step = float(curve.get("t0", 0.0)), float(curve["step"])
            times = [t0 + k * step for k in range(len(vals))]
    except (KeyError, TypeError, ValueError):
        log.warning("ignoring a malformed 'actionness' curve")
        return None
    return times, vals


def format_seconds(t: float, _pos=None) -> str:
    """Seconds as ``m:ss`` or ``h:mm:ss`` (axis ticks, report tables)."""
    t = max(0.0, float(t))
    h, rem = divmod(round(t), 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass(frozen=True)
class _VideoRows:
    vid: str
    duration: float  # seconds
    preds: list  # [(label, score, t0, t1)], score >= min_score, ascending score
    pred_lanes: list[int]
    n_pred_lanes: int
    gts: list  # [(label, t0, t1)]
    gt_lanes: list[int]
    n_gt_lanes: int
    curve: tuple[list[float], list[float]] | None


def _as_results(results):
    from tal_pipeline.results import as_results

    return as_results(results)


def _as_annotations(annotations):
    from tal_pipeline.annotations import as_annotations

    return as_annotations(annotations)


def _video_rows(results, annotations, video_ids, opts: PlotOptions) -> list[_VideoRows]:
    from tal_pipeline.errors import InputError

    ids = list(results.detections)  # ground-truth-only videos show when asked for by id
    known_ids = ids + [
        v for v in (annotations.videos if annotations else ()) if v not in results.detections
    ]
    if video_ids:
        missing = [v for v in video_ids if v not in known_ids]
        if missing:
            known = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "")
            raise InputError(f"video id not in the results: {', '.join(missing)} (have: {known})")
        ids = list(video_ids)
    if not ids:
        raise InputError(f"{results.source}: no videos to plot")
    if opts.max_videos and len(ids) > opts.max_videos:
        log.warning(
            "plotting the first %d of %d videos (--video-id picks one)", opts.max_videos, len(ids)
        )
        ids = ids[: opts.max_videos]
    rows = []
    for vid in ids:
        segs = [s for s in results.detections.get(vid, []) if s.score >= opts.min_score]
        segs.sort(key=lambda s: s.score)  # low scores first: high scores are drawn on top
        preds = [(s.label, s.score, s.start, s.end) for s in segs]
        gts = (
            list(annotations.videos[vid].segments)
            if annotations and vid in annotations.videos
            else []
        )
        meta = results.videos.get(vid) or {}
        duration = meta.get("duration") if isinstance(meta, Mapping) else None
        if not isinstance(duration, (int, float)) or duration <= 0:
            duration = (
                annotations.videos[vid].duration
                if annotations and vid in annotations.videos
                else 0.0
            )
        ends = [t1 for *_, t1 in preds] + [t1 for *_, t1 in gts]
        duration = max([float(duration), *ends, 1e-3])
        pl, npl = assign_lanes([(t0, t1) for _, _, t0, t1 in preds], opts.max_lanes)
        gl, ngl = assign_lanes([(t0, t1) for _, t0, t1 in gts], opts.max_lanes)
        rows.append(_VideoRows(vid, duration, preds, pl, npl, gts, gl, ngl, actionness_curve(meta)))
    return rows


# ---------------------------------------------------------------- drawing


def draw_timeline(
    results,
    annotations=None,
    video_ids: Sequence[str] | None = None,
    options: PlotOptions = PlotOptions(),
) -> Timeline:
    """Draw the timeline figure (matplotlib, Agg backend) without saving it.

    Args:
        results: a results file or folder path, a results dict, or a ``Results``.
        annotations: ground truth (path, dict or ``Annotations``), or None.
        video_ids: the videos to draw (default: all, up to ``options.max_videos``).
        options: see :class:`PlotOptions`.

    Returns:
        a :class:`Timeline` (figure, per-video axes, drawn bars, class colours).
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg renders
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    results = _as_results(results)
    annotations = _as_annotations(annotations)
    rows = _video_rows(results, annotations, video_ids, options)
    colors = class_colors(
        [p[0] for r in rows for p in r.preds] + [g[0] for r in rows for g in r.gts]
    )

    # vertical layout in inches: per video a title, the lanes, the strip, the time axis
    title_in, axis_in, gap_in = 0.30, 0.35, 0.15
    legend_rows = math.ceil(len(colors) / max(1, int(options.width_in // 1.6))) if colors else 0
    legend_in = 0.25 * legend_rows + (0.15 if legend_rows else 0.0)
    heights = []
    for r in rows:
        lanes = max(r.n_pred_lanes, 1) + (r.n_gt_lanes + 0.6 if r.gts else 0)
        heights.append((lanes * options.lane_in + 0.1, options.strip_in if r.curve else 0.0))
    total_in = legend_in + sum(title_in + h + s + axis_in + gap_in for h, s in heights) + 0.1
    fig = Figure(figsize=(options.width_in, total_in), dpi=options.dpi)
    tl = Timeline(figure=fig, colors=colors)

    left_in, right_in = 1.1, 0.3
    x0 = left_in / options.width_in
    w = 1.0 - (left_in + right_in) / options.width_in
    y_top = total_in - legend_in  # inches from the bottom of the figure
    px_per_in = options.dpi
    for r, (h_in, s_in) in zip(rows, heights):
        y_top -= title_in
        ax = fig.add_axes((x0, (y_top - h_in) / total_in, w, h_in / total_in))
        tl.axes[r.vid] = ax
        ax.set_title(
            f"{r.vid}  ({len(r.preds)} detections, {format_seconds(r.duration)})",
            loc="left",
            fontsize=9,
        )
        # one lane = 1 data unit; predictions on top, ground truth below a gap
        n_pl = max(r.n_pred_lanes, 1)
        gt_top = r.n_gt_lanes + 0.0
        pred_base = (gt_top + 0.6) if r.gts else 0.0
        ax.set_ylim(0, pred_base + n_pl)
        ax.set_xlim(0, r.duration)
        min_w = options.min_bar_px * r.duration / (w * options.width_in * px_per_in)  # s per px
        bars: list[Bar] = []
        for (label, score, t0, t1), lane in zip(r.preds, r.pred_lanes):
            y1 = pred_base + n_pl - lane - 0.1  # lane 0 at the top
            bars.append(Bar("pred", label, score, t0, t1, y1 - 0.8, y1, colors[label]))
        for (label, t0, t1), lane in zip(r.gts, r.gt_lanes):
            y1 = gt_top - lane - 0.1
            bars.append(Bar("gt", label, 1.0, t0, t1, y1 - 0.8, y1, colors[label]))
        for kind in ("pred", "gt"):  # one collection per kind: fast with thousands of bars
            mine = [b for b in bars if b.kind == kind]
            if not mine:
                continue
            verts = []  # (N, 4, 2) rectangles in data units
            for b in mine:
                t1 = b.start + max(b.end - b.start, min_w)
                verts.append(((b.start, b.y0), (b.start, b.y1), (t1, b.y1), (t1, b.y0)))
            faces = [
                to_rgba(b.color, MIN_ALPHA + (1.0 - MIN_ALPHA) * min(max(b.score, 0.0), 1.0))
                for b in mine
            ]
            ax.add_collection(
                PolyCollection(
                    verts,
                    facecolors=faces,
                    linewidths=0.4 if kind == "gt" else 0,
                    edgecolors="black" if kind == "gt" else "none",
                ),
                autolim=False,
            )
        tl.bars[r.vid] = bars
        ticks, names = [pred_base + n_pl / 2], ["detections"]
        if r.gts:
            ax.axhline(gt_top + 0.3, color="0.6", linewidth=0.6)
            ticks.append(gt_top / 2)
            names.append("ground truth")
        ax.set_yticks(ticks, names, fontsize=8)
        ax.tick_params(axis="y", length=0)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=12, steps=[1, 2, 3, 5, 6, 10]))
        ax.xaxis.set_major_formatter(FuncFormatter(format_seconds))
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", color="0.9", linewidth=0.6)
        ax.set_axisbelow(True)
        y_top -= h_in
        if r.curve:
            ax.tick_params(axis="x", labelbottom=False)
            sx = fig.add_axes((x0, (y_top - s_in) / total_in, w, s_in / total_in), sharex=ax)
            times, vals = r.curve
            sx.fill_between(times, vals, step="mid", color="0.35", alpha=0.5, linewidth=0)
            sx.plot(times, vals, drawstyle="steps-mid", color="0.2", linewidth=0.6)
            sx.set_ylim(0, max(1.0, max(vals)))
            sx.set_yticks([0.5], ["actionness"], fontsize=8)
            sx.tick_params(axis="y", length=0)
            sx.tick_params(axis="x", labelsize=8)
            tl.strips[r.vid] = sx
            y_top -= s_in
            sx.set_xlabel("time (h:mm:ss)" if r.duration >= 3600 else "time (m:ss)", fontsize=8)
        else:
            ax.set_xlabel("time (h:mm:ss)" if r.duration >= 3600 else "time (m:ss)", fontsize=8)
        y_top -= axis_in + gap_in

    if colors:
        handles = [Patch(facecolor=c, label=name) for name, c in colors.items()]
        ncol = max(1, min(len(handles), int(options.width_in // 1.6)))
        fig.legend(
            handles=handles,
            loc="upper left",
            ncol=ncol,
            fontsize=8,
            frameon=False,
            bbox_to_anchor=(x0 - 0.01, 1.0),
            handlelength=1.2,
            columnspacing=1.0,
        )
    return tl


# extension -> matplotlib format and how the file carries safety.PLOT_MARK (so a later plot
# recognises it as one it may replace): PNG/SVG/PDF metadata, a JPEG comment
IMAGE_FORMATS = {
    ".png": ("png", {"metadata": {"Software": PLOT_MARK}}),
    ".svg": ("svg", {"metadata": {"Creator": PLOT_MARK}}),
    ".pdf": ("pdf", {"metadata": {"Creator": PLOT_MARK}}),
    ".jpg": ("jpg", {"pil_kwargs": {"comment": PLOT_MARK}}),
    ".jpeg": ("jpg", {"pil_kwargs": {"comment": PLOT_MARK}}),
}


def image_format(out) -> tuple[str, dict]:
    """(matplotlib format, savefig keywords) for the file name ``out``: its extension names the
    format (``.png``, ``.svg``, ``.pdf``, ``.jpg``); UsageError for any other."""
    from tal_pipeline.errors import UsageError

    ext = Path(out).suffix.lower()
    if ext not in IMAGE_FORMATS:
        raise UsageError(f"-o {out}: {'unknown image format ' + ext if ext else 'no extension'}; "
                         f"name the file {', '.join(IMAGE_FORMATS)}")
    return IMAGE_FORMATS[ext]


def plot_timeline(
    results,
    out_png,
    annotations=None,
    video_ids: Sequence[str] | None = None,
    options: PlotOptions = PlotOptions(),
    inputs=None,
) -> Timeline:
    """Draw the timeline (see :func:`draw_timeline`) and write it in the format its extension
    names (:func:`image_format`), through ``safety`` (atomically; never over a file of another
    kind or one of ``inputs``, a ``safety.Inputs``).

    A raster image is exactly ``options.width_in * options.dpi`` pixels wide; its height grows
    with the number of videos and lanes.
    """
    import io

    from tal_pipeline.safety import NO_INPUTS, check_target, write_bytes

    inputs = inputs or NO_INPUTS
    check_target(out_png, "plot", inputs)  # before drawing: a folder, an input, another kind
    fmt, kwargs = image_format(out_png)
    tl = draw_timeline(results, annotations, video_ids, options)
    buf = io.BytesIO()
    tl.figure.savefig(buf, format=fmt, dpi=options.dpi, facecolor="white", **kwargs)
    write_bytes(Path(out_png), buf.getvalue(), "plot", inputs)
    return tl
