"""Options shared by the verbs, declared once, and the one place their values are checked.

Every option value is checked while click parses the command line, by the types and callbacks
here (``FiniteFloat``, ``formats_option``, ``device_option``, ...): a value no machine accepts
is click's usage error, exit status 2, before any work or file access (docs/hostile_inputs.md,
"Exit status"). ``--device cuda`` on a machine without CUDA is the machine's fault: exit 1.
"""

from __future__ import annotations

import functools
import math

import click


class FiniteFloat(click.ParamType):
    """A finite number (``nan`` and ``inf`` refused, which ``click.FloatRange`` lets through)
    within optional bounds: ``low < x`` (``low_open``) or ``low <= x``, and ``x <= high``."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, low_open: bool = False):
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value, param, ctx) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r}: expected a finite number", param, ctx)
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            self.fail(f"{value!r}: must be {'>' if self.low_open else '>='} {self.low:g}", param, ctx)
        if self.high is not None and x > self.high:
            self.fail(f"{value!r}: must be <= {self.high:g}", param, ctx)
        return x


def _formats(ctx, param, value):
    from tal_pipeline.errors import InputError
    from tal_pipeline.writers import parse_formats

    try:
        return parse_formats(value)
    except InputError as err:
        raise click.BadParameter(str(err).removeprefix("--format: ")) from None


def formats_option(help: str):
    """``--format LIST`` (``tal detect``, ``tal convert``): a tuple of known formats, or None."""
    return click.option("--format", "formats", default=None, metavar="LIST", callback=_formats,
                        help=help)


def streams_value(ctx, param, value: str) -> tuple[str, ...]:
    """``--streams rgb,flow`` -> ``("rgb", "flow")``; BadParameter for anything else."""
    names = tuple(s.strip() for s in value.split(",") if s.strip())
    if not names or any(s not in ("rgb", "flow") for s in names):
        raise click.BadParameter(f"must be rgb, flow or rgb,flow, got {value!r}")
    return names


def _device(ctx, param, value):
    from tal_pipeline.batch import check_device

    check_device(value)  # UsageError (exit 2) for a name no machine has; exit 1 without CUDA
    return value


def device_option(help: str = "Torch device: cpu, cuda, cuda:1, ..."):
    """``--device``: checked before any work (``batch.check_device``)."""
    return click.option("--device", default="cpu", show_default=True, callback=_device, help=help)


BUSY_WAIT_S = 3600.0  # --busy-wait's default: a long video's extraction on a CPU takes this long


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
        device_option(),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
                     default="auto", show_default=True,
                     help="Backbone precision; auto: fp16 on CUDA, bf16 on CPUs with native bf16, "
                          "else fp32."),
        click.option("--overwrite", is_flag=True,
                     help="Redo videos whose outputs exist (never over a file of another kind)."),
        click.option("--shard", default=None, metavar="I/N", help="Process only shard I of N (0-based)."),
        click.option("--busy-wait", type=FiniteFloat(0), default=BUSY_WAIT_S, show_default=True,
                     metavar="SECONDS",
                     help="At the end, wait this long for videos another process on the same output "
                          "is working on; still busy then: not done, exit status 1. 0: no wait."),
        click.option("--progress/--no-progress", default=None,
                     help="Progress bar (default: on a terminal)."),
    )):
        f = opt(f)
    return f


def scale_out_options(f):
    """``--ray [ADDRESS]``, ``--workers``, ``--gpus-per-worker``, ``--threads``. ``--workers`` and
    ``--gpus-per-worker`` only mean something on Ray: without ``--ray`` they are a usage error
    (exit 2), never silently ignored."""

    @functools.wraps(f)
    def checked(*args, **kwargs):
        if kwargs.get("ray_address") is None:
            given = [name for name, key in (("--workers", "workers"),
                                            ("--gpus-per-worker", "gpus_per_worker"))
                     if kwargs.get(key) is not None]
            if given:
                raise click.UsageError(f"{' and '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} "
                                       "with --ray (Ray workers); without --ray one local process runs")
        return f(*args, **kwargs)

    return _scale_out_params(checked)


def _scale_out_params(f):
    f = click.option(
        "--threads", type=click.IntRange(1), default=None,
        help="Torch threads per worker (default: all cores; with --ray, the count the local "
             "path would use here, so results are bitwise identical).")(f)
    f = click.option(
        "--gpus-per-worker", type=FiniteFloat(0), default=None,
        help="With --ray: GPUs each worker reserves (0.5: two workers share one) [default: 0].")(f)
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
            local=None, busy_wait=0.0):
    """The batch of ``job`` over ``items``: locally (``local``: a worker the caller built
    already, else ``job.setup()``), or on Ray when ``ray_address`` is set. ``busy_wait``: the
    local loop's wait for videos another process holds (on Ray such videos count as not done)."""
    if ray_address is None:
        from tal_pipeline.batch import run_batch

        w = local if local is not None else job.setup()
        return run_batch(items, w.process, w.is_done, desc=desc, progress=progress,
                         lock_dir=w.lock_dir, outputs_fn=w.outputs, problems=problems,
                         busy_wait=busy_wait)
    from tal_pipeline.ray_engine import RayOptions, run_batch_ray

    opts = RayOptions(address=None if ray_address == "local" else ray_address, workers=workers,
                      threads=job.threads, gpus_per_worker=gpus_per_worker or 0.0)
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
            click.option("--min-score", type=FiniteFloat(0, 1), default=0.0, show_default=True,
                         help="Leave out detections scoring below this."),
        )):
            f = opt(f)
        return f

    return deco

