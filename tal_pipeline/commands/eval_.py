"""`tal eval PRED --annotations ann.json|ann.csv`: detection mAP with the official ActivityNet protocol.

PRED is a merged results file or a folder of per-video results files (what ``tal detect``
writes). Without ``--subset`` every video of the annotation file is evaluated (a ground-truth
video without predictions counts its instances as missed); pass ``--subset validation`` (or
``Test``, ``testing``, ...; case-insensitive, comma-separated for several) to evaluate one split.
The table on stdout is in percent; ``--json`` prints one JSON object with fractions instead.
Warnings (ignored predictions, videos without predictions) go to stderr.
"""

from __future__ import annotations

import json
import math

import click

from tal_pipeline.evaluate import THUMOS_TIOU


def parse_tiou(text: str) -> tuple[float, ...]:
    """``"0.3:0.7:0.1"`` (start:stop:step, stop included) or ``"0.5,0.75,0.95"`` or ``"0.5"``
    -> thresholds, rounded to 10 decimals; each must be in (0, 1]."""
    text = text.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError("expected start:stop:step")
            start, stop, step = parts
            if not step > 0 or stop < start:
                raise ValueError("expected step > 0 and stop >= start")
            count = math.floor((stop - start) / step + 1e-9) + 1  # inclusive stop, float-safe
            values = [round(start + k * step, 10) for k in range(count)]
        else:
            values = [round(float(p), 10) for p in text.split(",") if p.strip()]
    except ValueError as err:
        raise click.BadParameter(f"{text!r}: {err}") from None
    if not values:
        raise click.BadParameter(f"{text!r}: no thresholds")
    bad = [v for v in values if not 0 < v <= 1]
    if bad:
        raise click.BadParameter(f"{text!r}: thresholds must be in (0, 1], got {bad}")
    return tuple(values)


def _tiou_option(ctx, param, value):
    return THUMOS_TIOU if value is None else parse_tiou(value)


@click.command("eval")
@click.argument("pred", type=click.Path(exists=True, path_type=str))
@click.option(
    "--annotations", "-a", required=True, type=click.Path(exists=True, dir_okay=False, path_type=str),
    help="Ground truth: ActivityNet/ActionFormer JSON ({'database': {vid: {...}}}) or a .csv/.tsv "
    "table (video_id,label,start,end[,subset,duration]).",
)
@click.option(
    "--subset", default=None,
    help="Evaluate only the ground-truth videos of this subset (e.g. validation, Test; "
    "comma-separated for several). Default: all videos of the annotation file.",
)
@click.option(
    "--tiou", default=None, callback=_tiou_option, metavar="START:STOP:STEP|LIST",
    help="tIoU thresholds: start:stop:step (stop included) or a comma list "
    "[default: 0.3:0.7:0.1, THUMOS14; ActivityNet: 0.5:0.95:0.05].",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (fractions) instead of a table.")
def command(pred: str, annotations: str, subset: str | None, tiou: tuple[float, ...], as_json: bool) -> None:
    """Detection mAP of PRED (results file or folder) against --annotations."""
    from tal_pipeline.annotations import load_annotations
    from tal_pipeline.evaluate import evaluate
    from tal_pipeline.results import load_results

    ground_truth = load_annotations(annotations, subset=subset)
    predictions = load_results(pred)
    result = evaluate(ground_truth, predictions, tiou_thresholds=tiou)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
    else:
        click.echo(result.table())
