"""Options shared by the batch verbs (``tal extract``, ``tal detect``), declared once."""

from __future__ import annotations

import click


def npy_options(f):
    """``--fps``, ``--feature-stride``, ``--window-frames``: how to read time from meta-less
    ``.npy`` features (``featio.load_features``; ActionFormer's convention: feature i is centred
    at ``(i * stride + window / 2) / fps``). ``tal train`` and ``tal detect --features``."""
    for opt in reversed((
        click.option("--fps", type=float, default=None,
                     help="Meta-less .npy only: the videos' frame rate (a per-video 'fps' in the "
                          "annotations wins)."),
        click.option("--feature-stride", type=int, default=None,
                     help="Meta-less .npy only: frames per feature step."),
        click.option("--window-frames", type=int, default=16, show_default=True,
                     help="Meta-less .npy only: frames per backbone window (feature i is centred "
                          "at (i*stride + frames/2)/fps)."),
    )):
        f = opt(f)
    return f


def batch_options(f):
    """The options every batch verb shares: where it runs, in what precision, which share of
    the inputs, whether to redo finished videos, the progress bar; then ``scale_out_options``."""
    f = scale_out_options(f)
    for opt in reversed((
        click.option("--device", default="cpu", show_default=True,
                     help="Torch device: cpu, cuda, cuda:1, ..."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
                     default="auto", show_default=True,
                     help="Backbone precision; auto: fp16 on CUDA, bf16 on CPUs with native bf16, "
                          "else fp32."),
        click.option("--overwrite", is_flag=True,
                     help="Redo videos whose outputs exist (never over a file of another kind)."),
        click.option("--shard", default=None, metavar="I/N", help="Process only shard I of N (0-based)."),
        click.option("--progress/--no-progress", default=None,
                     help="Progress bar (default: on a terminal)."),
    )):
        f = opt(f)
    return f


def scale_out_options(f):
    """``--ray [ADDRESS]``, ``--workers``, ``--gpus-per-worker``, ``--threads``."""
    f = click.option(
        "--threads", type=click.IntRange(1), default=None,
        help="Torch threads per worker (default: all cores; with --ray, the count the local "
             "path would use here, so results are bitwise identical).")(f)
    f = click.option(
        "--gpus-per-worker", type=click.FloatRange(0, min_open=False), default=0.0,
        show_default=True, help="With --ray: GPUs each worker reserves (0.5: two workers share one).")(f)
    f = click.option(
        "--workers", type=click.IntRange(1), default=None,
        help="With --ray: worker processes (default: one per free CPU slot, or per GPU share).")(f)
    f = click.option(
        "--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
        help="Run on Ray: alone, a local Ray instance; 'auto' or HOST:PORT, a running cluster "
             "(`ray start --head`). Outputs go where -o points (storage every node sees). "
             "Put it after the inputs.")(f)
    return f


def run_job(items, job, *, desc, progress, problems, ray_address, workers, gpus_per_worker,
            local=None):
    """The batch of ``job`` over ``items``: locally (``local``: a worker the caller built
    already, else ``job.setup()``), or on Ray when ``ray_address`` is set."""
    if ray_address is None:
        from tal_pipeline.batch import run_batch

        w = local if local is not None else job.setup()
        return run_batch(items, w.process, w.is_done, desc=desc, progress=progress,
                         lock_dir=w.lock_dir, outputs_fn=w.outputs, problems=problems)
    from tal_pipeline.ray_engine import RayOptions, run_batch_ray

    opts = RayOptions(address=None if ray_address == "local" else ray_address, workers=workers,
                      threads=job.threads, gpus_per_worker=gpus_per_worker)
    return run_batch_ray(items, job, opts, desc=desc, progress=progress, problems=problems)


def view_options(output_help: str, annotations_help: str):
    """``tal plot`` and ``tal report``: PRED (a results file or folder), ``-o``, the ground
    truth (``--annotations``, ``--subset``) and ``--min-score``."""
    from pathlib import Path

    def deco(f):
        for opt in reversed((
            click.argument("pred", type=click.Path(exists=True, path_type=str)),
            click.option("-o", "--output", "out", required=True,
                         type=click.Path(dir_okay=False, path_type=Path), help=output_help),
            click.option("--annotations", "-a", default=None,
                         type=click.Path(exists=True, dir_okay=False, path_type=str),
                         help="Ground truth (ActivityNet/ActionFormer JSON, or .csv/.tsv "
                              f"video_id,label,start,end): {annotations_help}."),
            click.option("--subset", default=None, help="Only the ground-truth videos of this subset."),
            click.option("--min-score", type=click.FloatRange(0, 1), default=0.0, show_default=True,
                         help="Leave out detections scoring below this."),
        )):
            f = opt(f)
        return f

    return deco

