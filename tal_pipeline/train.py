"""Training the head on feature files and ActivityNet-format annotations.

Recipe (defaults in :class:`TrainConfig`):

1. Data: one ``(T, D)`` array per annotated video of the training subset; instance times in
   seconds become feature steps with the video's ``t0``/``step``
   (:mod:`tal_pipeline.head.assign`).
2. Each epoch visits every video ``max(1, ceil(T / window))`` times (a random window of
   ``window`` steps each; short videos whole, padded), and at least ``min_samples_per_epoch``
   windows in all (small datasets cycle through their videos again), in a seeded random order.
   A random window keeps at least one instance with >= 75 % of its extent inside (the paper's
   tIoU >= 0.75 rule; 10 tries, then any window).
3. AdamW (weight decay on conv weights only), linear warmup for ``warmup_epochs`` then cosine
   decay to 0, per iteration; gradient norm clipped at ``grad_clip``.
4. Loss: :func:`tal_pipeline.head.losses.head_loss` (both stages).
5. Validation mAP (THUMOS tIoU 0.3..0.7) every ``val_every`` epochs and after the last one,
   when validation videos are given; recorded in the checkpoint. With ``select="best"`` (the
   default) the weights of the validation run with the best average mAP are saved (early
   stopping by model selection: small training sets overfit late in the schedule); with
   ``"last"``, or without validation videos, the last epoch's.
6. Precision (``precision``, default "auto"): the training forward pass under bfloat16
   autocast where the hardware multiplies bfloat16 (AMX or AVX512-BF16 CPUs, CUDA), float32
   elsewhere ("bf16" and "fp32" force one); weights, gradients, the optimizer and the losses stay
   float32, validation and inference are float32. Chosen on the synthetic regimes' validation
   splits (docs/method.md, "Training"; BENCHMARKS.md, "Head").
7. Head options: :func:`head_defaults` (:data:`HEAD_DEFAULTS`, plus :data:`WIDE_DEFAULTS` for
   features of at least :data:`WIDE_DIM` channels) under the caller's overrides (``tal train``'s
   defaults; :class:`HeadConfig`'s own defaults are the earlier behaviour old checkpoints rely on).

Reproducibility: everything random comes from ``seed`` (torch for the initial weights, a numpy
PCG64 generator for windows and order); on CPU the same seed gives a bit-identical checkpoint
on one machine in either precision (the checkpoint holds no times or dates). A bf16 and an fp32
machine train different weights from one seed (as close in validation mAP as two seeds are).

Resume: after every epoch the full training state goes to the sidecar ``<out>.ckpt``
(the model checkpoint dict, optimizer state, epochs done, iteration, the numpy generator's
state, torch's RNG state, the training options). ``resume=True`` continues from it; the result
equals an uninterrupted run. The sidecar is deleted once ``<out>`` is written.
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tal_pipeline.checkpoint import make_checkpoint, save_checkpoint
from tal_pipeline.errors import InputError
from tal_pipeline.featio import UNKNOWN, recorded_flow_version
from tal_pipeline.global_motion import MotionInput
from tal_pipeline.head.assign import AssignConfig, assign_levels, assign_window, collate_targets
from tal_pipeline.head.losses import LossWeights, head_loss
from tal_pipeline.head.model import HeadConfig, HeadModel, HeadOutputs
from tal_pipeline.inference import predict_segments

log = logging.getLogger(__name__)

STATE_FORMAT = "tal-pipeline/head-train-state"
THUMOS_TIOU = (0.3, 0.4, 0.5, 0.6, 0.7)
SELECT = ("best", "last")
PRECISIONS = ("auto", "fp32", "bf16")

# HeadConfig fields that new models get unless the caller overrides them, chosen on the hard
# synthetic regime's validation split (BENCHMARKS.md, "Head"): the old head regressed long
# instances from a ~30-step receptive field (boundary error 15 steps on instances over 45 steps;
# exact boundaries would have lifted average mAP by 20 points). Dilated stem layers and a deeper
# TPP widen the field past the longest instances; five output levels give each instance length
# a level whose distances are a few strides; the actionness head ranks the candidates.
HEAD_DEFAULTS: dict[str, Any] = {
    "stem_layers": 4,
    "stem_dilations": (1, 2, 4, 8),
    "tpp_dilations": (1, 2, 4, 8),
    "tpp_strides": (2, 4, 8, 16),
    "output_levels": 5,
    "score_fusion": "actionness",
}
# Wide features (D >= WIDE_DIM) also get a 3-tap embedding (``embed_kernel``). On the synthetic
# long regime (D = 2048, 50 training videos) the 1x1 embedding memorised the training videos
# (training loss fell while validation mAP fell, and class accuracy inside held-out instances
# was at chance); three taps let the first layer filter each of the D input channels in time
# before the compression to H. On the hard regime (D = 128) the same change lost 11 points of
# validation mAP, so narrow features keep the 1x1 embedding. The memorising was not over:
# with 3 taps two training seeds still ended 16 validation points apart; dropping whole input
# channels while training (``input_dropout`` 0.5: the head cannot lean on a few of the 2048)
# raised validation avg mAP from 61.7 / 45.3 to 87.3 / 75.6 (seeds 0 / 1). Not for narrow features:
# on the easy regime (D = 64) it fell to 33.5 (from 96.2). BENCHMARKS.md, "Head".
WIDE_DIM = 1024
WIDE_DEFAULTS: dict[str, Any] = {"embed_kernel": 3, "input_dropout": 0.5}


def head_defaults(dim: int) -> dict[str, Any]:
    """``tal train``'s head options for ``dim``-channel features (before the caller's overrides)."""
    return {**HEAD_DEFAULTS, **(WIDE_DEFAULTS if dim >= WIDE_DIM else {})}


@dataclass(frozen=True)
class TrainConfig:
    """Training options. Defaults train a good model on a few dozen short videos in minutes on CPU."""

    epochs: int = 30
    batch_size: int = 4  # windows per iteration
    lr: float = 1e-3  # peak learning rate (AdamW)
    weight_decay: float = 0.05  # on conv weights only
    warmup_epochs: float = 2.0  # linear warmup, epochs
    grad_clip: float = 1.0  # max gradient L2 norm
    window: int = 256  # training window, feature steps
    min_samples_per_epoch: int = 240  # windows per epoch at least (small datasets cycle); 240, not
    #   128: 50-100 short training videos stopped learning at 960-1,140 iterations (docs/method.md,
    #   "Training"); a set with 240 windows an epoch or more is unchanged
    crop_coverage: float = 0.75  # a random window keeps one instance with this fraction inside
    val_every: int = 5  # epochs between validation mAP runs (0: only after the last epoch)
    select: str = "best"  # saved weights: "best" validation average mAP, or "last" epoch
    seed: int = 0
    device: str = "cpu"
    precision: str = "auto"  # training forward pass: "fp32", "bf16" (autocast: convolutions and
    #   attention in bfloat16; weights, gradients, optimizer and losses in float32) or "auto"
    #   (resolve_precision: bf16 where the hardware multiplies bfloat16, else fp32). Validation
    #   and inference run in float32 whatever this says.
    loss: LossWeights = field(default_factory=LossWeights)
    assign: AssignConfig = field(default_factory=AssignConfig)

    def __post_init__(self):
        if self.select not in SELECT:
            raise ValueError(f"select must be one of {SELECT}, got {self.select!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainVideo:
    """One annotated video's features, ready for training."""

    video_id: str
    features: np.ndarray  # (T, D) float32
    t0: float  # centre time of position 0, s
    step: float  # s per position
    duration: float  # s
    instances: np.ndarray  # (N, 3): class index, start, end in feature steps
    motion: np.ndarray | None = None  # (T, K) global-motion descriptor of the flow, if the file has it

    @property
    def times(self) -> np.ndarray:
        return self.t0 + self.step * np.arange(self.features.shape[0])


@dataclass
class FeatureSet:
    """Videos loaded from a features folder, and what the checkpoint records about them."""

    videos: list[TrainVideo]
    class_names: list[str]
    info: dict[str, Any]  # step, fps, feature_stride, window_frames, backbone, weights


def load_feature_set(
    features_dir: str | os.PathLike,
    annotations,
    class_names: list[str] | None = None,
    fps: float | None = None,
    feature_stride: int | None = None,
    window_frames: int = 16,
) -> FeatureSet:
    """Load the features of every video in ``annotations`` (a :class:`~tal_pipeline.results.Annotations`).

    Meta-less ``.npy`` files take ``fps`` from the annotation's per-video ``fps`` when present,
    else from ``fps``; ``feature_stride`` from the argument. Videos without a features file are
    skipped with a warning; none at all, mixed D or mixed backbones are an InputError.
    """
    from tal_pipeline.featio import load_features

    folder = Path(features_dir)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of features")
    names = list(class_names) if class_names is not None else annotations.class_names
    index = {n: k for k, n in enumerate(names)}
    videos, metas, missing = [], [], []
    for vid, ann in annotations.videos.items():
        npy = folder / f"{vid}.npy"
        if not npy.is_file():
            missing.append(vid)
            continue
        arr, meta = load_features(npy, fps=ann.fps or fps, feature_stride=feature_stride, window_frames=window_frames)
        duration = ann.duration if ann.duration > 0 else meta.duration
        inst = [
            (index[label], (t_start - meta.t0) / meta.step, (t_end - meta.t0) / meta.step)
            for label, t_start, t_end in ann.segments
            if label in index
        ]
        videos.append(TrainVideo(vid, arr, meta.t0, meta.step, duration, np.asarray(inst, np.float64).reshape(-1, 3),
                                 meta.motion))
        metas.append(meta)
    if missing:
        log.warning("%d annotated videos have no features in %s (skipped), e.g. %s", len(missing), folder, missing[:3])
    if not videos:
        raise InputError(f"{folder}: no features for any of the {len(annotations.videos)} annotated videos")
    dims = {v.features.shape[1] for v in videos}
    if len(dims) > 1:
        raise InputError(f"{folder}: features have different dimensions {sorted(dims)}")
    backbones = {(m.backbone, m.weights) for m in metas}
    if len(backbones) > 1:
        raise InputError(f"{folder}: features come from different backbones/weights: {sorted(backbones)[:3]}")
    backbone, weights = backbones.pop()

    def common(values):
        return Counter(values).most_common(1)[0][0]

    steps = [m.step for m in metas]
    info = {
        "step": float(common(steps)),
        "steps_vary": bool(max(steps) - min(steps) > 1e-6 * max(steps)),
        "fps": float(common([m.fps for m in metas])),
        "feature_stride": int(common([m.feature_stride for m in metas])),
        "t0": float(common([m.t0 for m in metas])),
        "window_frames": int(window_frames),
        "backbone": backbone or UNKNOWN,
        "weights": weights or UNKNOWN,
        "dim": dims.pop(),
        "streams": list(common([tuple(m.streams) for m in metas])),
        # the TV-L1 implementation of the flow stream: the detector builds the same one
        "flow_backend": common([m.extra.get("flow_backend") for m in metas]),
        "flow_version": common([recorded_flow_version(m.extra) for m in metas]),
    }
    return FeatureSet(videos, names, info)


def with_motion_input(data: FeatureSet, motion_input: MotionInput | None = None) -> tuple[FeatureSet, MotionInput]:
    """``data`` with each video's global-motion descriptor appended to its features
    (``global_motion.MotionInput``: ``(T, D) -> (T, D + K)``), z-scored by ``motion_input``'s
    statistics, or by ``data``'s own when None (the training set's; validation passes the
    training set's). Returns the new set and the ``MotionInput``; the set's ``info`` records it
    (the checkpoint's ``features["motion_input"]``). A video without the descriptor is an
    InputError naming it."""
    lacking = [v.video_id for v in data.videos if v.motion is None]
    if lacking:
        raise InputError(f"{len(lacking)} videos' features carry no global motion (made by an older tal or "
                         f"without the flow stream), e.g. {lacking[:3]}: re-extract them to train with it")
    if motion_input is None:
        motion_input = MotionInput.fit([v.motion for v in data.videos])
    videos = [replace(v, features=motion_input.append(v.features, v.motion, v.video_id)) for v in data.videos]
    info = {**data.info, "dim": data.info["dim"] + motion_input.width, "motion_input": motion_input.to_json()}
    return FeatureSet(videos, data.class_names, info), motion_input


def _pick_window(video: TrainVideo, window: int, coverage: float, rng: np.random.Generator) -> int:
    """Start of a random training window (0 when the video fits)."""
    t = video.features.shape[0]
    if t <= window:
        return 0
    inst = video.instances
    start = 0
    for _ in range(10):
        start = int(rng.integers(0, t - window + 1))
        if len(inst) == 0:
            return start
        length = np.maximum(inst[:, 2] - inst[:, 1], 1e-6)
        inside = np.clip(np.minimum(inst[:, 2], start + window - 1) - np.maximum(inst[:, 1], start), 0, None)
        if np.any(inside / length >= coverage):
            return start
    return start


def _epoch_plan(videos: list[TrainVideo], config: TrainConfig, rng: np.random.Generator) -> list[int]:
    """Video indices for one epoch (each visited ceil(T / window) times, at least the minimum)."""
    base = [k for k, v in enumerate(videos) for _ in range(max(1, math.ceil(v.features.shape[0] / config.window)))]
    plan = []
    while len(plan) < max(len(base), config.min_samples_per_epoch):
        plan.extend(base[i] for i in rng.permutation(len(base)))
    return plan[: max(len(base), config.min_samples_per_epoch)]


def _make_batch(videos: list[TrainVideo], idx: list[int], config: TrainConfig, num_classes: int, rng,
                strides: tuple[int, ...] = (1,)):
    """Features ``(B, W, D)``, stage-1 targets, and the final stage's targets (None when the head
    has one output level: the same positions as stage 1) of one batch."""
    chunks, targets, finals, lengths = [], [], [], []
    for k in idx:
        v = videos[k]
        s = _pick_window(v, config.window, config.crop_coverage, rng)
        x = v.features[s : s + config.window]
        inst = v.instances.copy()
        inst[:, 1:] -= s
        keep = (inst[:, 2] > 0) & (inst[:, 1] < len(x) - 1)
        targets.append(assign_window(inst[keep], len(x), num_classes, config.assign))
        if len(strides) > 1:
            finals.append(assign_levels(inst[keep], len(x), num_classes, strides, config.assign))
        chunks.append(x)
        lengths.append(len(x))
    total = max(lengths)
    feats = np.zeros((len(idx), total, chunks[0].shape[1]), np.float32)
    for k, x in enumerate(chunks):
        feats[k, : len(x)] = x
    final = collate_targets(finals, lengths, total, strides) if finals else None
    return torch.from_numpy(feats), collate_targets(targets, lengths, total), final


def _lr_at(it: int, total: int, warmup: int, peak: float) -> float:
    if it < warmup:
        return peak * (it + 1) / warmup
    progress = (it - warmup) / max(1, total - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _optimizer(model: HeadModel, config: TrainConfig) -> torch.optim.AdamW:
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    # fused: one kernel over all parameters instead of ~10 small ops per parameter tensor (the
    # per-tensor loop cost ~8 % of a CPU training step); the same update up to rounding
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, fused=torch.device(config.device).type in ("cpu", "cuda"),
    )


def validate(model: HeadModel, data: FeatureSet, annotations, device="cpu") -> dict[str, Any]:
    """mAP of ``model`` on ``data`` against ``annotations`` (THUMOS thresholds)."""
    from tal_pipeline.evaluate import evaluate

    model.eval()
    preds = {
        v.video_id: predict_segments(model, v.features, v.times, v.step, v.duration, data.class_names, device=device)
        for v in data.videos
    }
    gt = type(annotations)({k: annotations.videos[k] for k in preds}, annotations.source)
    res = evaluate(gt, preds, THUMOS_TIOU)
    return {"tiou": list(res.tiou), "mAP": [float(m) for m in res.mAP], "average_mAP": float(res.average_mAP)}


def _state_path(out: Path) -> Path:
    return out.with_name(out.name + ".ckpt")


def _check_resume(state: dict, config: TrainConfig, source: str) -> None:
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise InputError(f"{source}: not a tal-pipeline training state")
    saved = state.get("train_config", {})
    ignore = {"epochs", "device", "val_every", "precision"}  # where and how fast, not what is learnt
    defaults = asdict(TrainConfig())
    for f in fields(TrainConfig):
        if f.name in ignore:
            continue
        if isinstance(saved.get(f.name), dict) and isinstance(defaults[f.name], dict):
            # a nested option added since the state was written (e.g. loss.final_act) ran at its
            # default then: a state from an older tal resumes under today's defaults
            saved = {**saved, f.name: {**defaults[f.name], **saved[f.name]}}
        if f.name in saved and saved[f.name] != asdict(config)[f.name]:
            raise InputError(
                f"{source}: cannot resume with {f.name}={asdict(config)[f.name]!r}; "
                f"the run was started with {saved[f.name]!r}"
            )


@dataclass
class _Progress:
    """Where a training run stands (what the resume state carries besides the weights)."""

    epochs_done: int = 0
    iteration: int = 0
    history: list[dict] = field(default_factory=list)  # validation runs, in order
    last_loss: float = float("nan")  # mean training loss of the last epoch
    best: dict[str, Any] = field(default_factory=dict)  # {"epoch", "average_mAP", "state_dict"} of the best validation


@dataclass(frozen=True)
class _Schedule:
    """Iterations of one run (learning-rate schedule, progress bar)."""

    per_epoch: int
    total: int
    warmup: int

    @classmethod
    def of(cls, videos: list[TrainVideo], config: TrainConfig) -> _Schedule:
        windows = sum(max(1, math.ceil(v.features.shape[0] / config.window)) for v in videos)
        per_epoch = math.ceil(max(config.min_samples_per_epoch, windows) / config.batch_size)
        return cls(per_epoch, per_epoch * config.epochs, max(1, round(config.warmup_epochs * per_epoch)))


def _build_model(train_data: FeatureSet, config: TrainConfig, head: dict[str, Any] | None) -> HeadModel:
    """The seeded initial model: :func:`head_defaults` under ``head``, sized by the data."""
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        from tal_pipeline.errors import NotAvailableError

        raise NotAvailableError(f"device {config.device!r} requested but CUDA is not available")
    head_config = HeadConfig(
        **{**head_defaults(train_data.info["dim"]), **(head or {}), "input_dim": train_data.info["dim"],
           "num_classes": len(train_data.class_names)}
    )
    torch.manual_seed(config.seed)
    return HeadModel(head_config).to(device)


def _resume(state_path: Path, config: TrainConfig, model: HeadModel, optimizer, rng) -> _Progress:
    """Load the resume state at ``state_path`` into model, optimizer and generators."""
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"{state_path}: unreadable training state ({str(err)[:200]})") from None
    _check_resume(state, config, str(state_path))
    if state["checkpoint"].get("input_dim") != model.config.input_dim:
        raise InputError(f"{state_path}: cannot resume: the run was started with "
                         f"{state['checkpoint'].get('input_dim')} input channels, this one has "
                         f"{model.config.input_dim} (--motion-input given to one run only?)")
    model.load_state_dict(state["checkpoint"]["state_dict"])
    optimizer.load_state_dict(state["optimizer"])
    rng.bit_generator.state = state["rng_numpy"]
    torch.set_rng_state(state["rng_torch"])
    log.info("resuming from %s after epoch %d", state_path, state["epoch"])
    return _Progress(state["epoch"], state["iteration"], list(state["history"]),
                     state.get("last_loss", float("nan")), state.get("best", {}))


def resolve_precision(precision: str, device: str) -> str:
    """``TrainConfig.precision`` with "auto" resolved: "bf16" on a CUDA device that supports it
    and on a CPU that multiplies bfloat16 in hardware (AMX or AVX512-BF16: emulated bfloat16 is
    slower than float32), else "fp32"."""
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    # imported here, not at the top: tal_pipeline.features imports the backbones
    from tal_pipeline.features import cpu_has_native_bf16

    return "bf16" if cpu_has_native_bf16() else "fp32"


def _float_outputs(out: HeadOutputs) -> HeadOutputs:
    """The outputs in float32 (the losses sum thousands of terms: not in bfloat16)."""
    return replace(out, **{f.name: getattr(out, f.name).float() for f in fields(out) if f.name != "strides"})


def _train_epoch(model: HeadModel, optimizer, data: FeatureSet, config: TrainConfig, schedule: _Schedule,
                 run: _Progress, rng, bar) -> None:
    """One epoch of iterations; advances ``run.iteration`` and sets ``run.last_loss``."""
    device = torch.device(config.device)
    model.train()
    plan = _epoch_plan(data.videos, config, rng)
    amp = config.precision == "bf16"  # "auto" was resolved by train()
    running = []
    for b in range(0, len(plan), config.batch_size):
        feats, targets, final = _make_batch(data.videos, plan[b : b + config.batch_size], config,
                                            len(data.class_names), rng, model.config.strides)
        feats, targets = feats.to(device), targets.to(device)
        final = final.to(device) if final is not None else None
        for group in optimizer.param_groups:
            group["lr"] = _lr_at(run.iteration, schedule.total, schedule.warmup, config.lr)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(feats, targets.mask)
        losses = head_loss(_float_outputs(out) if amp else out, targets, config.loss, final)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        run.iteration += 1
        running.append(float(losses["loss"].detach()))
        bar.update(1)
        bar.set_postfix(epoch=run.epochs_done + 1, loss=f"{np.mean(running[-20:]):.3f}")
    run.last_loss = float(np.mean(running))
    run.epochs_done += 1


def _maybe_validate(model: HeadModel, config: TrainConfig, run: _Progress, val_data, val_annotations) -> None:
    """Validation mAP when due (every ``val_every`` epochs and after the last); keeps the best weights."""
    done = run.epochs_done
    if val_data is None or not ((config.val_every and done % config.val_every == 0) or done == config.epochs):
        log.debug("epoch %d: loss %.4f", done, run.last_loss)
        return
    metrics = validate(model, val_data, val_annotations, config.device)
    run.history.append({"epoch": done, **metrics})
    if config.select == "best" and metrics["average_mAP"] > run.best.get("average_mAP", -1.0):
        run.best = {"epoch": done, "average_mAP": metrics["average_mAP"],
                    "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
    log.info("epoch %d: loss %.4f, validation mAP@0.5 %.2f %%, average mAP %.2f %%",
             done, run.last_loss, 100 * metrics["mAP"][2], 100 * metrics["average_mAP"])


def _checkpoint(model: HeadModel, data: FeatureSet, config: TrainConfig, run: _Progress,
                extra_info: dict[str, Any] | None) -> dict:
    """The model checkpoint dict of the weights ``model`` holds now."""
    done = run.epochs_done
    training = {
        "config": config.to_dict(),
        "epochs_done": done,
        "iterations": run.iteration,
        "num_videos": len(data.videos),
        "num_instances": int(sum(len(v.instances) for v in data.videos)),
        "final_loss": float(run.last_loss),
        "validation": run.history,
        "selected_epoch": run.best.get("epoch", done) if config.select == "best" else done,
        **(extra_info or {}),
    }
    return make_checkpoint(model, data.class_names, data.info, training)


def _save_state(state_path: Path, checkpoint: dict, optimizer, config: TrainConfig, run: _Progress, rng) -> None:
    """The resume state after an epoch (see the module docstring)."""
    save_checkpoint(state_path, {
        "format": STATE_FORMAT,
        "checkpoint": checkpoint,
        "optimizer": optimizer.state_dict(),
        "epoch": run.epochs_done,
        "iteration": run.iteration,
        "history": run.history,
        "last_loss": run.last_loss,
        "best": run.best,
        "rng_numpy": rng.bit_generator.state,
        "rng_torch": torch.get_rng_state(),
        "train_config": config.to_dict(),
    })


def train(
    train_data: FeatureSet,
    out: str | os.PathLike,
    config: TrainConfig = TrainConfig(),
    head: dict[str, Any] | None = None,
    val_data: FeatureSet | None = None,
    val_annotations=None,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    extra_info: dict[str, Any] | None = None,
) -> dict:
    """Train a head and write its checkpoint to ``out``; returns the checkpoint dict.

    Args:
        train_data: from :func:`load_feature_set`.
        out: checkpoint path (the resume state goes beside it, ``<out>.ckpt``).
        config: training options.
        head: :class:`HeadConfig` overrides (``input_dim``/``num_classes`` come from the data).
        val_data, val_annotations: validation videos and their ground truth (optional).
        resume: continue from ``<out>.ckpt`` if it exists.
        progress: tqdm bar on stderr with the running loss.
        stop_after: stop after this many epochs in all, leaving the resume state (tests and
            time-boxed runs); ``<out>`` is not written then, and the return value is ``{}``.
        extra_info: added to the checkpoint's ``training`` dict (e.g. data paths).
    """
    from tqdm import tqdm

    out = Path(out)
    # the checkpoint records the precision this run trained in, not "auto"
    config = replace(config, precision=resolve_precision(config.precision, config.device))
    model = _build_model(train_data, config, head)
    optimizer = _optimizer(model, config)
    rng = np.random.Generator(np.random.PCG64(config.seed))
    schedule = _Schedule.of(train_data.videos, config)
    state_path = _state_path(out)
    run = _Progress()
    if resume and state_path.is_file():
        run = _resume(state_path, config, model, optimizer, rng)
    elif resume:
        log.info("no training state at %s: starting from scratch", state_path)

    end_epoch = config.epochs if stop_after is None else min(config.epochs, stop_after)
    bar = tqdm(total=(end_epoch - run.epochs_done) * schedule.per_epoch, disable=not progress, desc="train",
               unit="it", dynamic_ncols=True)
    try:
        while run.epochs_done < end_epoch:
            _train_epoch(model, optimizer, train_data, config, schedule, run, rng, bar)
            _maybe_validate(model, config, run, val_data, val_annotations)
            _save_state(state_path, _checkpoint(model, train_data, config, run, extra_info), optimizer, config,
                        run, rng)
    finally:
        bar.close()
    if run.epochs_done < config.epochs:
        return {}
    if run.best and config.select == "best":
        model.load_state_dict(run.best["state_dict"])
    ckpt = _checkpoint(model, train_data, config, run, extra_info)
    save_checkpoint(out, ckpt)
    state_path.unlink(missing_ok=True)
    return ckpt
