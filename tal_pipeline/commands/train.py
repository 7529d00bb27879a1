"""``tal train FEATURES_DIR --annotations ann.json -o model.pt``: train the TSA/TPP head."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from tal_pipeline.commands.options import npy_options
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
@click.option("--epochs", type=int, default=None, help="Epochs [default: 30].")
@click.option("--batch-size", type=int, default=None, help="Windows per iteration [default: 4].")
@click.option("--lr", type=float, default=None, help="Peak AdamW learning rate [default: 1e-3].")
@click.option("--window", type=int, default=None, help="Training/inference window, feature steps [default: 256].")
@click.option("--hidden-dim", type=int, default=None, help="Channels inside the head [default: 128].")
@click.option("--tsa", type=click.Choice(["full", "plain", "none"]), default="full", show_default=True,
              help="TSA variant (ablation).")
@click.option("--tpp/--no-tpp", default=True, show_default=True, help="Temporal pyramid pooling (ablation).")
@click.option("--val-every", type=int, default=None, help="Epochs between validation runs [default: 5].")
@click.option("--select", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Weights to save: the best validation average mAP, or the last epoch's. Use 'last' when the "
                   "validation subset is the test set (report only, choose nothing on it).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUTPUT.ckpt if it exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def command(features_dir, annotations, output, subset, val_subset, fps, feature_stride, window_frames, epochs,
            batch_size, lr, window, hidden_dim, tsa, tpp, val_every, select, device, seed, resume, quiet):
    """Train the TSA/TPP head on FEATURES_DIR (<id>.npy [+ <id>.json]) and ANNOTATIONS.

    Foreign meta-less features (e.g. ActionFormer's THUMOS14 I3D .npy) need --feature-stride and
    a frame rate (--fps, or a per-video 'fps' in the annotations).
    """
    from dataclasses import replace

    from tal_pipeline.annotations import load_annotations
    from tal_pipeline.train import TrainConfig, load_feature_set, train

    ann = load_annotations(annotations)
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
    config = TrainConfig(seed=seed, device=device, select=select)
    overrides = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "window": window, "val_every": val_every}
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    for k in ("epochs", "batch_size", "window"):
        if getattr(config, k) < 1:
            raise InputError(f"--{k.replace('_', '-')} must be >= 1")
    head = {"tsa": tsa, "tpp": tpp}
    if hidden_dim is not None:
        head["hidden_dim"] = hidden_dim
    if window is not None:
        head["window"] = window
        head["overlap"] = window // 4 - (window // 4) % 16  # hop: a multiple of the coarsest stride
    log.info("training on %d videos (%s), %d classes, D=%d; validation: %s",
             len(data.videos), subset or "all subsets", len(data.class_names), data.info["dim"],
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
        last = ckpt["training"]["validation"][-1]
        msg += f", validation mAP@0.5 {100 * last['mAP'][2]:.2f} %, average {100 * last['average_mAP']:.2f} %"
    click.echo(msg, err=True)
