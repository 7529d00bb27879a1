"""`tal plot PRED -o timeline.png`: a timeline of detections (and ground truth) per video.

The extension of ``-o`` names the format: ``.png``, ``.svg``, ``.pdf``, ``.jpg``; another is
refused (exit 2).

PRED is a merged results file or a folder of per-video results files (what ``tal detect``
writes). One panel per video (``--video-id`` picks some), time across, one colour per class,
bar opacity = score, overlapping detections stacked in lanes; the ground truth under them with
``--annotations``; an actionness strip when the results carry one.
"""

from __future__ import annotations

import click

from tal_pipeline.commands.options import view_options
from tal_pipeline.plot import PlotOptions


@click.command("plot")
@view_options("Image to write; its extension names the format: .png, .svg, .pdf, .jpg.",
              "drawn under the detections")
@click.option(
    "--video-id",
    "video_ids",
    multiple=True,
    help="Plot this video only (repeat for several). Default: all, up to --max-videos.",
)
@click.option(
    "--max-lanes",
    type=click.IntRange(1),
    default=PlotOptions.max_lanes,
    show_default=True,
    help="Lanes of stacked detections per video.",
)
@click.option(
    "--max-videos",
    type=click.IntRange(0),
    default=PlotOptions.max_videos,
    show_default=True,
    help="Panels per figure (0 = all).",
)
@click.option(
    "--width",
    type=click.FloatRange(2, 100),
    default=PlotOptions.width_in,
    show_default=True,
    help="Figure width, inches.",
)
@click.option("--dpi", type=click.IntRange(20, 600), default=PlotOptions.dpi, show_default=True)
def command(
    pred, out, annotations, subset, video_ids, min_score, max_lanes, max_videos, width, dpi
):
    """Draw a timeline of the detections in PRED (PNG, SVG, PDF or JPEG, by -o's extension)."""
    from tal_pipeline.annotations import load_annotations
    from tal_pipeline.plot import plot_timeline

    gt = load_annotations(annotations, subset) if annotations else None
    opts = PlotOptions(
        min_score=min_score, max_lanes=max_lanes, max_videos=max_videos, width_in=width, dpi=dpi
    )
    from tal_pipeline.safety import Inputs

    inputs = Inputs.of([pred, annotations])  # never written over
    tl = plot_timeline(pred, out, gt, list(video_ids) or None, opts, inputs)
    n = sum(len([b for b in bars if b.kind == "pred"]) for bars in tl.bars.values())
    click.echo(f"{out}: {len(tl.axes)} video(s), {n} detections", err=True)
