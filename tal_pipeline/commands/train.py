"""``tal train FEATURES_DIR --annotations ann.json -o model.pt``: train the TSA/TPP head."""

from __future__ import annotations

import logging
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import click

from tal_pipeline.commands.options import FiniteFloat, device_option, npy_options
from tal_pipeline.errors import InputError

log = logging.getLogger(__name__)


def _pick_subsets(ann, subset: str | None, val_subset: str | None) -> tuple[str | None, str | None]:
    """Training and validation subset names (None = all videos / no validation)."""
    have = {s.lower(): s for s in ann.subsets}
    if subset is None:
        if "training" in have:
            subset = have["training"]
        elif len(have) <= 1:
            subset = None
        else:
            raise InputError(
                f"{ann.source}: no 'training' subset; pass --subset (subsets in the file: {', '.join(have.values())})"
            )
    if val_subset is None:
        val_subset = have.get("validation")
    elif val_subset.lower() == "none":
        val_subset = None
    if val_subset is not None and subset is not None and val_subset.lower() == subset.lower():
        val_subset = None
    return subset, val_subset


# HeadConfig fields that come from the data, never from the command line
_FROM_DATA = ("input_dim", "num_classes")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _parse_value(text: str, kind) -> Any:
    """``text`` as a value of the type ``kind`` (int, float, bool, str or tuple[int, ...]);
    ValueError when it is not one."""
    if kind is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError("expected true or false")
    if typing.get_origin(kind) is tuple:  # "1,2,4" -> (1, 2, 4); "" -> ()
        item = typing.get_args(kind)[0]
        parts = [p.strip() for p in text.strip("()[] ").split(",") if p.strip()]
        return tuple(_parse_value(p, item) for p in parts)
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("expected an integer") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError("expected a number") from None
    return text


def parse_head_options(pairs: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """``--head KEY=VALUE`` pairs -> :class:`~tal_pipeline.head.model.HeadConfig` overrides.

    Each value is parsed into its field's type: ``hidden_dim=64``, ``dropout=0.5``,
    ``tpp=false``, ``stem_dilations=1,2,4,8`` (a tuple; empty: ``stem_dilations=``). Unknown
    keys, the fields the data sets (``input_dim``, ``num_classes``), a key given twice and
    values of the wrong type are an InputError of one line. The values themselves are checked
    by HeadConfig when the model is built.
    """
    from tal_pipeline.head.model import HeadConfig

    types = typing.get_type_hints(HeadConfig)
    known = [f.name for f in fields(HeadConfig) if f.name not in _FROM_DATA]
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise InputError(f"--head {pair!r}: expected KEY=VALUE, e.g. --head hidden_dim=64")
        if key in _FROM_DATA:
            raise InputError(f"--head {key}: set by the features and annotations, not on the command line")
        if key not in known:
            raise InputError(f"--head {key}: unknown head option (known: {', '.join(known)})")
        if key in out:
            raise InputError(f"--head {key}: given twice")
        try:
            out[key] = _parse_value(text.strip(), types[key])
        except ValueError as err:
            raise InputError(f"--head {pair}: {err}") from None
    return out


def _head_value(ctx, param, value) -> dict[str, Any]:
    """``--head`` pairs parsed while click reads the command line: a bad one exits 2."""
    try:
        return parse_head_options(value)
    except InputError as err:
        raise click.BadParameter(str(err)) from None


def _check_head(head: dict[str, Any], data) -> None:
    """The head options together, as the model of ``data`` will be built with them (a value
    HeadConfig refuses, e.g. an even ``embed_kernel``): a usage error before training."""
    from tal_pipeline.head.model import HeadConfig
    from tal_pipeline.train import head_defaults

    dim = data.info["dim"]
    try:
        HeadConfig(**{**head_defaults(dim), **head, "input_dim": dim, "num_classes": len(data.class_names)})
    except (TypeError, ValueError) as err:
        raise click.UsageError(f"head options: {err}") from None


@click.command("train")
@click.argument("features_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--annotations", "annotations", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="ActivityNet/ActionFormer JSON or .csv/.tsv (video_id,label,start,end[,subset,duration]); seconds.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Checkpoint to write (resume state goes to OUTPUT.ckpt while training).")
@click.option("--subset", default=None, help="Training subset(s), comma-separated [default: 'training' if present].")
@click.option("--val-subset", default=None,
              help="Validation subset for mAP during training [default: 'validation' if present; 'none' to skip].")
@npy_options
@click.option("--epochs", type=click.IntRange(1), default=None, help="Epochs [default: 30].")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Windows per iteration [default: 4].")
@click.option("--lr", type=FiniteFloat(0, low_open=True), default=None,
              help="Peak AdamW learning rate [default: 1e-3].")
@click.option("--min-windows", type=click.IntRange(1), default=None,
              help="Training windows per epoch at least: small sets cycle through their videos again "
                   "[default: 240].")
@click.option("--window", type=click.IntRange(1), default=None,
              help="Training/inference window, feature steps [default: 256].")
@click.option("--hidden-dim", type=click.IntRange(1), default=None, help="Channels inside the head [default: 128].")
@click.option("--tsa", type=click.Choice(["full", "plain", "none"]), default="full", show_default=True,
              help="TSA variant (ablation).")
@click.option("--tpp/--no-tpp", default=True, show_default=True, help="Temporal pyramid pooling (ablation).")
@click.option("--head", "extra_head", multiple=True, metavar="KEY=VALUE", callback=_head_value,
              help="Any head option (HeadConfig field), repeatable: --head dropout=0.5 --head "
                   "stem_dilations=1,2,4,8. Wins over tal train's defaults; see docs/method.md.")
@click.option("--val-every", type=click.IntRange(0), default=None, help="Epochs between validation runs [default: 5].")
@click.option("--select", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Weights to save: the best validation average mAP, or the last epoch's. Use 'last' when the "
                   "validation subset is the test set (report only, choose nothing on it).")
@device_option("cpu, cuda or cuda:N.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default=None,
              help="Training forward pass [default: auto]; auto: bf16 on CPUs that multiply bfloat16 in "
                   "hardware (AMX, AVX512-BF16) and on CUDA, else fp32. Weights and losses stay fp32.")
@click.option("--final-act", type=click.Choice(["inside", "iou"]), default=None,
              help="Final actionness target [default: inside]; iou: each positive's own predicted tIoU "
                   "(a localisation-quality score; opt-in, docs/method.md).")
@click.option("--motion-input", is_flag=True,
              help="Also feed the head each step's global-motion descriptor of the flow (the camera model "
                   "fitted to it and what it leaves unexplained; features from tal extract with the flow "
                   "stream carry it), z-scored by the training videos' statistics; docs/method.md.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUTPUT.ckpt if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def command(features_dir, annotations, output, subset, val_subset, fps, feature_stride, window_frames, epochs,
            batch_size, lr, min_windows, window, hidden_dim, tsa, tpp, extra_head, val_every, select, device,
            precision, final_act, motion_input, seed, resume, quiet):
    """Train the TSA/TPP head on FEATURES_DIR (<id>.npy [+ <id>.json]) and ANNOTATIONS.

    Foreign meta-less features (e.g. ActionFormer's THUMOS14 I3D .npy) need --feature-stride and
    a frame rate (--fps, or a per-video 'fps' in the annotations).
    """
    from dataclasses import replace

    from tal_pipeline.annotations import load_annotations, without_zero_length
    from tal_pipeline.safety import Inputs, check_target
    from tal_pipeline.train import TrainConfig, load_feature_set, train, with_motion_input

    # a checkpoint that could never be written is refused now, not after the training
    check_target(output, "checkpoint", Inputs.of([annotations, features_dir]))
    ann = without_zero_length(load_annotations(annotations))  # no length: nothing to learn
    subset, val_subset = _pick_subsets(ann, subset, val_subset)
    train_ann = ann.select(subset)
    if train_ann.num_instances == 0:
        raise InputError(f"{annotations}: no action instances in the training videos")
    data = load_feature_set(features_dir, train_ann, fps=fps, feature_stride=feature_stride,
                            window_frames=window_frames)
    val_data = val_ann = None
    if val_subset is not None:
        val_ann = ann.select(val_subset)
        if val_ann.num_instances:
            val_data = load_feature_set(features_dir, val_ann, class_names=data.class_names, fps=fps,
                                        feature_stride=feature_stride, window_frames=window_frames)
            val_ann = type(val_ann)({v.video_id: val_ann.videos[v.video_id] for v in val_data.videos}, val_ann.source)
    if motion_input:  # validation z-scored by the training videos' statistics
        data, stats = with_motion_input(data)
        val_data = with_motion_input(val_data, stats)[0] if val_data is not None else None
    config = TrainConfig(seed=seed, device=device, select=select)
    overrides = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "window": window, "val_every": val_every,
                 "precision": precision, "min_samples_per_epoch": min_windows}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    if final_act is not None:
        config = replace(config, loss=replace(config.loss, final_act=final_act))
    head = {"tsa": tsa, "tpp": tpp}
    if hidden_dim is not None:
        head["hidden_dim"] = hidden_dim
    if window is not None:
        head["window"] = window
        head["overlap"] = window // 4 - (window // 4) % 16  # hop: a multiple of the coarsest stride
    # --tsa and --tpp always have a value; only one given on the command line can clash
    ctx = click.get_current_context()
    given = {k: v for k, v in head.items()
             if k not in ("tsa", "tpp") or ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT}
    clash = sorted(k for k in extra_head if k in given and given[k] != extra_head[k])
    if clash:
        raise click.UsageError(f"--head {clash[0]}: also set by its own option with another value")
    head.update(extra_head)
    _check_head(head, data)
    log.info("training on %d videos (%s), %d classes, D=%d%s; validation: %s",
             len(data.videos), subset or "all subsets", len(data.class_names), data.info["dim"],
             " (with the global motion's columns)" if motion_input else "",
             f"{len(val_data.videos)} videos ({val_subset})" if val_data else "none")
    info = {"annotations": annotations.name, "subset": subset or "", "val_subset": val_subset or "",
            "head_overrides": {k: v for k, v in head.items()}}
    try:
        ckpt = train(data, output, config, head=head, val_data=val_data, val_annotations=val_ann,
                     resume=resume, progress=not quiet, extra_info=info)
    except ValueError as err:  # bad head options (e.g. window/overlap)
        raise InputError(str(err)) from None
    msg = f"wrote {output}: {len(data.class_names)} classes, loss {ckpt['training']['final_loss']:.4f}"
    if ckpt["training"]["validation"]:
        # the scores of the weights written: the selected epoch's (select best), else the last
        epoch = ckpt["training"]["selected_epoch"]
        saved = next((r for r in ckpt["training"]["validation"] if r["epoch"] == epoch),
                     ckpt["training"]["validation"][-1])
        msg += (f", validation mAP@0.5 {100 * saved['mAP'][2]:.2f} %, average {100 * saved['average_mAP']:.2f} %"
                f" (epoch {saved['epoch']})")
    click.echo(msg, err=True)
