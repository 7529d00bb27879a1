"""ActionFormer as a peer baseline on the synthetic regimes, trained by its own THUMOS14 recipe.

ActionFormer (github.com/happyharrycn/actionformer_release, pinned at :data:`AF_COMMIT`) is what a
user would pick instead of our head. It is not vendored: this script expects a checkout, copies it
into a scratch folder, applies a few run-time patches there (:data:`PATCHES`: CPU, NumPy 2, an
optional tensorboard, and a switch to test the raw weights besides the EMA ones; nothing in the
model, loss, data or schedule), builds its C++ NMS extension for the CPU (its ``libs/utils``
setup.py with the installed g++ and torch; it has no Python NMS to fall back on), and drives its own
``train.py`` and ``eval.py`` as subprocesses::

    git clone https://github.com/happyharrycn/actionformer_release AF
    git -C AF checkout 61ea7eb9308a568b0cf45e3804830836e30061de
    pip install pyyaml setuptools pandas   # in our environment: its config reader, the NMS build
    pip install --target AF_DEPS h5py joblib cloudpickle    # its imports, kept out of our environment
    # (tensorboard is optional: without it a patch gives train.py a do-nothing log writer)
    python benchmarks/actionformer_peer.py --checkout AF --pythonpath AF_DEPS --regimes hard,harder --seeds 0,1,2
    ACTIONFORMER_DIR=AF python benchmarks/actionformer_peer.py --pythonpath AF_DEPS --epochs 1  # smoke run

Per (regime, seed): the regime's features are exported in ActionFormer's layout
(``features/<video_id>.npy``, float32 ``(T, D)``; ``annotations.json`` in its THUMOS14 JSON with
``label_id``), its ``configs/thumos_i3d.yaml`` is copied with only what the data forces changed
(:func:`actionformer_config`), ``train.py`` runs the full recipe (30 epochs after 5 warm-up
epochs, batch 2, AdamW lr 1e-4, weight decay 0.05, EMA 0.999, crop ratio 0.9-1.0, gradient clip
1.0), ``eval.py --saveonly`` predicts the ``testing`` subset with the EMA weights (what its
``eval.py`` uses) and with the raw weights, and the predictions are converted to our results JSON
and scored by :func:`tal_pipeline.evaluate.evaluate` on the same held-out test videos as
``benchmarks/bench_head.py``. ActionFormer selects nothing on validation (it trains a fixed
schedule), so the validation split is not used.

Rows are printed in ``bench_head.py``'s table layout (methods ``actionformer`` = EMA weights,
``actionformer-raw``), with the training wall time of ``train.py`` (data loading included), its CPU
time, and the 1-minute load average before and after (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable as a script

from benchmarks.synthetic import SyntheticBenchmark
from tal_pipeline.postprocess import Segment

AF_COMMIT = "61ea7eb9308a568b0cf45e3804830836e30061de"  # actionformer_release, 2024-04-10
AF_RECIPE = "configs/thumos_i3d.yaml"  # the recipe we adapt (THUMOS14, I3D features)
WINDOW_DIVISOR = 576  # ActionFormer needs max_seq_len % (2**5 * (19 // 2) * 2) == 0 for this recipe
EXTRA_PATH: list[str] = []  # --pythonpath: its own dependencies (h5py, joblib) kept out of our environment
PATCH_VERSION = 1
DEFAULT_WORK = str(Path(tempfile.gettempdir()) / "tal_actionformer_peer")  # kept: the NMS build is reused  # bump when PATCHES change: a scratch copy with another version is rebuilt

# (file, text in ActionFormer, replacement): the only changes made to its code. Each must match.
PATCHES: tuple[tuple[str, str, str], ...] = (
    # CPU: eval.py maps the checkpoint onto a CUDA device; newer torch also defaults to
    # weights_only loading, which refuses its pickled scheduler state.
    ("eval.py", "map_location = lambda storage, loc: storage.cuda(cfg['devices'][0])",
     "map_location='cpu', weights_only=False"),
    # Raw weights as well as EMA (its eval.py loads only the EMA copy): picked by an env variable.
    ("eval.py", "model.load_state_dict(checkpoint['state_dict_ema'])",
     "model.load_state_dict(checkpoint[os.environ.get('AF_STATE', 'state_dict_ema')])"),
    # CPU: the progress printer synchronises CUDA (twice: train and test loops).
    ("libs/utils/train_utils.py", "torch.cuda.synchronize()",
     "torch.cuda.synchronize() if torch.cuda.is_available() else None"),
    # NumPy 2 removed the np.float alias (used by its own evaluator, which we do not call).
    ("libs/utils/metrics.py", ".astype(np.float)", ".astype(np.float64)"),
    # tensorboard only logs; without it, a do-nothing writer (no change to training).
    ("train.py", "from torch.utils.tensorboard import SummaryWriter",
     ("try:\n    from torch.utils.tensorboard import SummaryWriter\nexcept ImportError:\n"
      "    class SummaryWriter:\n        def __init__(self, *a, **k): pass\n"
      "        def __getattr__(self, name): return lambda *a, **k: None")),
)


@dataclass(frozen=True)
class PeerOptions:
    """How to run ActionFormer (defaults: its THUMOS14 recipe as published)."""

    epochs: int | None = None  # epochs after warm-up (None: the recipe's 30)
    warmup_epochs: int | None = None  # None: the recipe's 5
    max_seq_len: int | None = None  # None: from the data (:func:`max_seq_len_for`)
    threads: int = 1  # torch threads of train.py / eval.py
    num_workers: int = 1  # its DataLoader workers (>= 1: it asks for persistent workers)
    seed: int = 0  # added to its init_rand_seed (seed 0 = the recipe's seed)


@dataclass(frozen=True)
class Export:
    """A regime written in ActionFormer's layout."""

    feat_folder: Path  # <video_id>.npy, float32 (T, D)
    json_file: Path  # {"database": {vid: {subset, duration, fps, annotations: [{label, segment, label_id}]}}}
    class_names: list[str]  # label_id k -> class_names[k]
    num_frames: int  # frames of the window a feature is centred on (t0 = 0.5 * num_frames / fps)
    max_train_len: int  # longest training video, feature steps


def export_regime(bench: SyntheticBenchmark, out_dir: str | os.PathLike) -> Export:
    """Write a benchmark's features and annotations as ActionFormer's THUMOS14 loader reads them.

    Its loader maps second ``t`` to grid ``t * fps / feat_stride - 0.5 * num_frames / feat_stride``;
    our feature ``i`` is centred at ``t0 + i * step`` s, so ``num_frames = 2 * t0 * fps`` (16 for
    the synthetic features' t0 = 0.8 s) puts every instance on the same grid positions as ours.
    """
    out = Path(out_dir)
    feats = out / "features"
    feats.mkdir(parents=True, exist_ok=True)
    cfg = bench.config
    t0s = {m.t0 for m in bench.metas.values()}
    if len(t0s) != 1:
        raise ValueError(f"features with different t0 ({sorted(t0s)}): ActionFormer has one num_frames")
    num_frames = round(2 * t0s.pop() * cfg.fps)
    label_id = {name: k for k, name in enumerate(bench.class_names)}
    database = {}
    for vid, x in bench.features.items():
        np.save(feats / f"{vid}.npy", np.ascontiguousarray(x, np.float32))
        entry = bench.annotations["database"][vid]
        database[vid] = {**entry, "annotations": [{**a, "label_id": label_id[a["label"]]}
                                                  for a in entry["annotations"]]}
    json_file = out / "annotations.json"
    json_file.write_text(json.dumps({"version": "synthetic-actionformer", "database": database}))
    train_len = max(bench.features[v].shape[0] for v in bench.subset("training"))
    return Export(feats, json_file, list(bench.class_names), num_frames, train_len)


def max_seq_len_for(train_len: int) -> int:
    """Training crop length: THUMOS14's 2304 steps cover most of its videos; ours are shorter, and
    padding every crop to 2304 would multiply the compute for nothing. The largest multiple of the
    window divisor that the longest training video reaches (at least one divisor, at most 2304)."""
    return int(min(2304, max(WINDOW_DIVISOR, train_len // WINDOW_DIVISOR * WINDOW_DIVISOR)))


def actionformer_config(recipe: Mapping, export: Export, dim: int, fps: float, feature_stride: int,
                        options: PeerOptions, output_folder: str | os.PathLike) -> dict:
    """The recipe (``configs/thumos_i3d.yaml`` as loaded by yaml) with only what our data forces:
    paths, splits, input_dim, num_classes, fps, feat_stride, num_frames, max_seq_len, devices cpu."""
    cfg = json.loads(json.dumps(recipe))  # deep copy
    cfg["train_split"], cfg["val_split"] = ["training"], ["testing"]
    ds = cfg["dataset"]
    ds.update(json_file=str(export.json_file), feat_folder=str(export.feat_folder), file_prefix=None,
              file_ext=".npy", num_classes=len(export.class_names), input_dim=int(dim), default_fps=float(fps),
              feat_stride=int(feature_stride), num_frames=export.num_frames,
              max_seq_len=options.max_seq_len or max_seq_len_for(export.max_train_len))
    cfg["devices"] = ["cpu"]
    cfg.setdefault("loader", {})["num_workers"] = options.num_workers
    cfg["init_rand_seed"] = 1234567891 + options.seed  # its default seed, shifted per training seed
    if options.epochs is not None:
        cfg["opt"]["epochs"] = options.epochs
    if options.warmup_epochs is not None:
        cfg["opt"]["warmup_epochs"] = options.warmup_epochs
    cfg["output_folder"] = str(output_folder)
    return cfg


def convert_results(raw: Mapping, class_names: list[str]) -> dict[str, list[Segment]]:
    """ActionFormer's saved predictions (``eval.py --saveonly``: ``video-id`` list and ``t-start``,
    ``t-end``, ``label`` (label_id), ``score`` arrays, seconds) -> video id -> segments."""
    vids = list(raw["video-id"])
    cols = [np.asarray(raw[k]) for k in ("t-start", "t-end", "label", "score")]
    if any(len(c) != len(vids) for c in cols):
        raise ValueError("ActionFormer results: columns of different lengths")
    out: dict[str, list[Segment]] = {}
    for vid, s, e, lab, sc in zip(vids, *cols):
        out.setdefault(str(vid), []).append(Segment(class_names[int(lab)], float(sc), float(s), float(e)))
    return out


def checkout_commit(checkout: Path) -> str | None:
    """The checkout's HEAD commit, or None where it is not a git work tree."""
    try:
        out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], check=False, capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def apply_patches(root: Path) -> None:
    """Apply :data:`PATCHES` in a scratch copy; a text that is not found is an error (wrong commit)."""
    for rel, old, new in PATCHES:
        path = root / rel
        text = path.read_text()
        if old not in text:
            raise RuntimeError(f"{path}: patch target not found ({old!r}); is the checkout at {AF_COMMIT[:10]}?")
        path.write_text(text.replace(old, new))


def prepare(checkout: Path, work: Path) -> tuple[Path, str]:
    """A patched scratch copy of the checkout with its NMS extension built; reused when its marker
    matches. Returns (scratch root, how NMS was provided)."""
    scratch = work / "actionformer"
    marker = scratch / ".tal_peer"
    want = f"{AF_COMMIT} patches={PATCH_VERSION}"
    if marker.is_file() and marker.read_text().strip() == want:
        return scratch, "C++ extension (built earlier)"
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(checkout, scratch, ignore=shutil.ignore_patterns(".git", "ckpt", "build", "*.so"))
    apply_patches(scratch)
    log = work / "nms_build.log"
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], check=False, cwd=scratch / "libs" / "utils",
                           stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        # ActionFormer has no Python NMS to fall back on; its libs/utils/nms.py imports the extension.
        raise RuntimeError(f"ActionFormer's NMS extension did not build (see {log}); it has no Python fallback")
    marker.write_text(want + "\n")
    return scratch, "C++ extension (built with this torch and g++)"


def _run(cmd: list[str], cwd: Path, threads: int, log: Path, extra_env: Mapping[str, str] | None = None) -> dict:
    path = os.pathsep.join([str(cwd / "libs" / "utils"), *EXTRA_PATH])  # nms_1d_cpu lives there
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONPATH": path,
           **(extra_env or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    with open(log, "w") as f:
        r = subprocess.run(cmd, check=False, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed with status {r.returncode}; see {log}")
    return {"wall_s": wall, "cpu_s": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            "load1": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def run_peer(regime_name: str, checkout: Path, work: Path, options: PeerOptions) -> list[dict]:
    """Train and test ActionFormer on one regime; one row per weights kind (EMA, raw)."""
    import yaml

    from benchmarks.head_harness import score, splits
    from benchmarks.synthetic import make_benchmark, regime

    scratch, nms = prepare(checkout, work)
    bench = make_benchmark(regime(regime_name))
    run_dir = work / f"{regime_name}_seed{options.seed}"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    export = export_regime(bench, run_dir / "data")
    recipe = yaml.safe_load((scratch / AF_RECIPE).read_text())
    cfg = actionformer_config(recipe, export, bench.config.dim, bench.config.fps, bench.config.feature_stride,
                              options, run_dir / "ckpt")
    cfg_path = run_dir / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # its train.py runs every epoch to the end and saves the last one (-c 0: no intermediate saves)
    py = sys.executable
    train = _run([py, "train.py", str(cfg_path), "--output", "run", "-c", "0", "-p", "100"], scratch,
                 options.threads, run_dir / "train.log")
    ckpts = sorted((run_dir / "ckpt").glob("*_run/epoch_*.pth.tar"))
    if not ckpts:
        raise RuntimeError(f"no checkpoint under {run_dir / 'ckpt'}")
    test = splits(bench)["testing"]
    rows = []
    for method, state in (("actionformer", "state_dict_ema"), ("actionformer-raw", "state_dict")):
        infer = _run([py, "eval.py", str(cfg_path), str(ckpts[-1]), "--saveonly"], scratch, options.threads,
                     run_dir / f"eval_{state}.log", {"AF_STATE": state})
        with open(ckpts[-1].parent / "eval_results.pkl", "rb") as f:
            raw = pickle.load(f)  # written a moment ago by its eval.py in our scratch folder
        preds = convert_results(raw, export.class_names)
        (run_dir / f"results_{state}.json").write_text(json.dumps(_results_json(preds, method)))
        rows.append({"regime": regime_name, "method": method, "seed": options.seed, "test": score(test, preds),
                     "val": None, "train_s": train["wall_s"], "train_cpu_s": train["cpu_s"],
                     "load1": train["load1"], "infer_s": infer["wall_s"], "epochs": ckpts[-1].name,
                     "max_seq_len": cfg["dataset"]["max_seq_len"], "num_frames": export.num_frames, "nms": nms,
                     "commit": AF_COMMIT})
    return rows


def _results_json(preds: Mapping[str, list[Segment]], method: str) -> dict:
    from tal_pipeline.results import make_results

    return make_results(preds, external_data={"model": f"actionformer@{AF_COMMIT[:10]} ({method})"})


def main() -> None:
    from benchmarks.head_harness import print_table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkout", default=os.environ.get("ACTIONFORMER_DIR"),
                   help=f"ActionFormer checkout at {AF_COMMIT[:10]} (or $ACTIONFORMER_DIR)")
    p.add_argument("--regimes", default="hard")
    p.add_argument("--seeds", default="0", help="training seeds, comma-separated")
    p.add_argument("--work", default=DEFAULT_WORK, help="scratch folder (patched copy, exports, checkpoints)")
    p.add_argument("--epochs", type=int, default=None, help="epochs after warm-up (default: the recipe's 30)")
    p.add_argument("--warmup-epochs", type=int, default=None)
    p.add_argument("--max-seq-len", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pythonpath", default="", help="folders with ActionFormer's own dependencies "
                   "(e.g. from pip install --target DIR h5py joblib cloudpickle), joined by ':'")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    EXTRA_PATH.extend(d for d in args.pythonpath.split(os.pathsep) if d)
    if not args.checkout or not (Path(args.checkout) / "train.py").is_file():
        sys.exit(f"actionformer_peer: no ActionFormer checkout at {args.checkout!r} (give --checkout or "
                 f"$ACTIONFORMER_DIR; commit {AF_COMMIT})")
    checkout = Path(args.checkout).resolve()
    commit = checkout_commit(checkout)
    if commit is not None and commit != AF_COMMIT:
        sys.exit(f"actionformer_peer: {checkout} is at {commit[:10]}, this script is pinned to {AF_COMMIT[:10]}")
    if commit is None:  # an exported tree (git archive): the patches still check every target they change
        print(f"actionformer_peer: {checkout} is not a git work tree; its commit is not checked", file=sys.stderr)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for regime_name in args.regimes.split(","):
            for seed in args.seeds.split(","):
                opts = PeerOptions(epochs=args.epochs, warmup_epochs=args.warmup_epochs, max_seq_len=args.max_seq_len,
                                   threads=args.threads, seed=int(seed))
                new = run_peer(regime_name.strip(), checkout, work, opts)
                for r in new:
                    print(json.dumps(r), flush=True)
                rows += new
    except RuntimeError as e:
        sys.exit(f"actionformer_peer: {e}")
    print()
    print_table(rows)
    print(f"\nActionFormer {AF_COMMIT[:10]}, its THUMOS14 recipe; train (s) = train.py wall time; "
          f"NMS: {rows[0]['nms'] if rows else '-'}; load average (1 min) before/after training: "
          + ", ".join(f"{r['regime']}/{r['seed']} {r['load1']}" for r in rows[::2]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
