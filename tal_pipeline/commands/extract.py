"""``tal extract INPUT... -o OUTDIR``: two-stream features for many videos.

Writes ``OUTDIR/<video_id>.npy`` (float32 (T, D)) and ``OUTDIR/<video_id>.json`` (meta, written
last: the completion marker), each atomically. Resumes: a video whose pair is complete and was
made with the same backbone, weights and streams is skipped, so a run stopped at any point
(Ctrl-C, SIGTERM, even SIGKILL) is simply run again. One failure is one line and the batch goes
on; the failures are listed at the end and in ``OUTDIR/failures.txt`` (``failures-<i>of<n>.txt``
for a shard). Exit status 0 only if no video failed.

Several processes may run on the same OUTDIR (e.g. one per GPU): each video is extracted under a
lock ``OUTDIR/.<video_id>.lock`` (``fcntl.flock``, see ``batch``); a video another process is on
counts as *busy* and is left to it (run again afterwards to be sure all are done).
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from tal_pipeline.backbone import BACKBONES
from tal_pipeline.commands.options import batch_options, run_job, streams_value


@click.command("extract")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for <video_id>.npy and <video_id>.json.")
@click.option("--streams", "names", default="rgb,flow", show_default=True, callback=streams_value,
              help="rgb, flow or rgb,flow.")
@click.option("--flow", "flow_backend", type=click.Choice(["opencv", "torch"]), default="torch",
              show_default=True, help="TV-L1 implementation: torch (batched, several times faster) or opencv (reference).")
@click.option("--weights", default="kinetics400", show_default=True,
              help="kinetics400 (torchvision's, cached by torch hub), seeded, or a .pth path.")
@click.option("--backbone", type=click.Choice(BACKBONES), default="r3d_18", show_default=True)
@click.option("--chunk-frames", type=click.IntRange(1), default=64, show_default=True,
              help="Backbone chunk in frames (memory vs. halo recompute).")
@click.option("--size", type=click.IntRange(0), default=0, hidden=True,
              help="Frame side in pixels (0: the weights' crop). Tests and ablations only.")
@batch_options
def command(inputs, out_dir, names, flow_backend, weights, backbone, device, precision, overwrite, shard,
            chunk_frames, progress, size, ray_address, workers, gpus_per_worker, threads, busy_wait):
    """Extract RGB + TV-L1 flow 3D-ResNet features from videos, files or folders or .txt lists."""
    from tal_pipeline.batch import (
        check_output_folder,
        exit_if_failed,
        failures_name,
        write_failures,
    )
    from tal_pipeline.inputs import select_inputs
    from tal_pipeline.jobs import ExtractJob, default_threads

    problems: list = []  # folders that could not be walked: failures of this batch
    items = select_inputs(inputs, shard, problems=problems)
    check_output_folder(out_dir)  # before any work; made once the weights have loaded
    if precision == "auto":  # resolved here, so that every --ray worker computes alike
        from tal_pipeline.features import auto_precision

        precision = auto_precision(device)
    # the per-video work (jobs.py), the same for the local loop and for --ray workers
    job = ExtractJob(out_dir, {"backbone": backbone, "weights": weights, "streams": names,
                                   "flow_backend": flow_backend, "device": device,
                                   "chunk_frames": chunk_frames, "size": size, "precision": precision},
                     overwrite=overwrite, threads=threads or default_threads())
    from tal_pipeline.locks import claim_folder, release_claim

    local = job.setup() if ray_address is None else None  # the weights load before the folder is made
    made = not os.path.lexists(out_dir)
    # never at the same time as a tal detect into this folder (locks.py)
    claim = claim_folder(out_dir, "features", "detections", _holds_detections)
    try:
        report = run_job(items, job, desc="tal extract", progress=progress, problems=problems,
                         ray_address=ray_address, workers=workers, gpus_per_worker=gpus_per_worker,
                         local=local, busy_wait=busy_wait)
    except BaseException:
        release_claim(claim)
        if made:  # a run that never started (no cluster at --ray's address) leaves no folder
            try:
                Path(out_dir).rmdir()
            except OSError:  # not empty: something was written, or another run uses it
                pass
        raise
    release_claim(claim)
    failures = write_failures(out_dir, report, failures_name(shard))
    click.echo(f"tal extract: {report.summary()} -> {out_dir}", err=True)
    exit_if_failed("extract", report, failures)


def _holds_detections(folder: Path) -> str | None:
    """Results of tal detect in ``folder`` (a results JSON without its .npy, or the hidden
    records of ``.tal/``), by name; None if there are none."""
    from tal_pipeline.safety import sniff

    if (folder / ".tal").is_dir():
        return f"{folder / '.tal'}{os.sep}, tal detect's records"
    for js in sorted(folder.glob("*.json")):
        if not js.with_suffix(".npy").exists() and sniff(js) == "results":
            return f"{js.name}, from tal detect"
    return None
