"""`tal report PRED --videos DIR_OR_FILE -o report.html`: one self-contained HTML page.

Per video: a player (the video file by a path relative to the page), the timeline, keyframes of
the top segments and a table of segments; clicking a row, bar or keyframe seeks the player.
The player shows the detections as captions (a WebVTT track, segments scoring >= 0.3, merged
per label as ``tal convert -o x.vtt`` writes them).
With ``--annotations``: the ground truth and AP per class. No network needed to view it.
"""

from __future__ import annotations

from pathlib import Path

import click

from tal_pipeline.commands.options import view_options
from tal_pipeline.report import ReportOptions


@click.command("report")
@view_options("HTML file to write (keep the videos where they are relative to it).",
              "drawn and scored")
@click.option(
    "--videos",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Folder of the videos (matched by file name = video id, recursively) or one "
    "video file. Default: the 'path' recorded in PRED.",
)
@click.option(
    "--top-k",
    type=click.IntRange(0),
    default=ReportOptions.top_k,
    show_default=True,
    help="Keyframe thumbnails per video (highest-scoring segments).",
)
@click.option(
    "--tiou", default=None, help="tIoU thresholds for AP, as in 'tal eval' (default 0.3:0.7:0.1)."
)
@click.option("--title", default=ReportOptions.title, show_default=True)
def command(pred, out, videos, annotations, subset, top_k, min_score, tiou, title):
    """Write an HTML report of the detections in PRED."""
    from tal_pipeline.annotations import load_annotations
    from tal_pipeline.commands.eval_ import parse_tiou
    from tal_pipeline.report import write_report

    opts = ReportOptions(
        top_k=top_k,
        min_score=min_score,
        title=title,
        tiou_thresholds=parse_tiou(tiou) if tiou is not None else ReportOptions.tiou_thresholds,
    )
    gt = load_annotations(annotations, subset) if annotations else None
    from tal_pipeline.safety import Inputs

    path = write_report(pred, videos, out, gt, opts, Inputs.of([pred, annotations, videos]))
    click.echo(str(path))
