"""``tal convert PRED -o OUT``: detections already computed, written in other formats.

PRED is a results file or a folder of per-video results files (what ``tal detect`` writes). No
detection runs again. The formats are those of ``tal detect`` (``tal_pipeline/writers.py``):

    tal convert out.json -o out.vtt                 # the only video's cues (WebVTT)
    tal convert out.json -o out.csv                 # every video, one row per detection
    tal convert results/ -o subs/ --format vtt,srt  # subs/<video_id>.vtt and .srt per video
    tal convert out.json -o out --format csv,tsv    # out.csv and out.tsv
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from tal_pipeline.commands.options import FiniteFloat, formats_option
from tal_pipeline.writers import FORMATS, SUBTITLE_MIN_SCORE


@click.command("convert")
@click.argument("pred", type=click.Path(exists=True, path_type=str))
@click.option("-o", "--output", "output_arg", required=True, type=click.Path(),
              help="A file (its extension picks the format: .json .vtt .srt .csv .tsv) or DIR/ "
              "(one file per video and format).")
@formats_option(f"Comma-separated formats among {','.join(FORMATS)} [default: from -o's extension; "
                "json for DIR/].")
@click.option("--min-score", type=FiniteFloat(0, 1), default=SUBTITLE_MIN_SCORE, show_default=True,
              help="vtt/srt: segments scoring below this get no cue (json/csv/tsv keep every one).")
@click.option("--video-id", "video_ids", multiple=True,
              help="Only this video (repeat for several). Default: all.")
def command(pred, output_arg, formats, min_score, video_ids):
    """Write the detections in PRED (results file or folder) as json, vtt, srt, csv or tsv."""
    from tal_pipeline.errors import InputError
    from tal_pipeline.results import load_results, make_results
    from tal_pipeline.safety import Inputs, check_output_arg, file_in, id_names
    from tal_pipeline.writers import WriterOptions, output_files

    check_output_arg(output_arg)
    res = load_results(pred)
    ids = list(video_ids) or list(res.detections)
    missing = [v for v in ids if v not in res.detections]
    if missing:
        raise InputError(f"{pred}: video id not in the results: {', '.join(missing)}")
    results = make_results({v: res.detections[v] for v in ids},
                           {v: res.videos[v] for v in ids if v in res.videos}, res.external_data)
    if res.version:
        results["version"] = res.version  # a conversion, not a new run
    options = WriterOptions(min_score=min_score)
    fmts = formats  # a tuple of known formats, or None (options.formats_option)
    inputs = Inputs.of([pred, res.source.rstrip(os.sep)])  # never written over (-o pred.json)
    if output_arg.endswith(("/", os.sep)) or Path(output_arg).is_dir():
        from tal_pipeline.results import split_results

        # ids come from a file anyone may have written: names made safe, all before any write
        id_names(results["results"])  # two ids that make one name: refused
        files = {vid: {f: file_in(output_arg, vid, f".{f}") for f in fmts or ("json",)}
                 for vid in results["results"]}
        written = []
        for vid, one in split_results(results).items():
            written += _write(pred, files[vid], one, options, inputs)
    else:
        written = _write(pred, output_files(output_arg, fmts), results, options, inputs)
    for path in written:
        click.echo(str(path))


def _write(pred, files, results, options, inputs) -> list:
    """``writers.write_all``; a segment a format refuses is named with PRED."""
    from tal_pipeline.errors import InputError
    from tal_pipeline.writers import check_segments, write_all

    try:
        for fmt in set(files) - {"json"}:
            check_segments(results, fmt)
    except InputError as err:
        raise InputError(f"{pred}: {err}") from None
    return write_all(files, results, options, inputs)
