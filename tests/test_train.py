"""Training, checkpoints and the train -> detect -> eval path through the CLI."""

import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from benchmarks.synthetic import SyntheticConfig, make_benchmark, write_benchmark
from tal_pipeline.checkpoint import checkpoint_bytes, load_head
from tal_pipeline.cli import main
from tal_pipeline.errors import InputError
from tal_pipeline.evaluate import evaluate
from tal_pipeline.inference import predict_segments
from tal_pipeline.postprocess import PostprocessConfig
from tal_pipeline.results import load_annotations
from tal_pipeline.train import TrainConfig, load_feature_set, train

TINY = SyntheticConfig(num_classes=2, dim=16, num_train=6, num_test=0, min_steps=60, max_steps=100,
                       max_instances=2, min_len=8, max_len=24, distractors=1, signal=0.8, seed=7)
TINY_HEAD = {"hidden_dim": 32, "window": 128, "overlap": 32}
QUICK = TrainConfig(epochs=3, batch_size=4, min_samples_per_epoch=8, window=128, seed=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    feats, ann = write_benchmark(make_benchmark(TINY), d)
    return feats, ann


@pytest.fixture(scope="module")
def data(bench_dir):
    feats, ann = bench_dir
    gt = load_annotations(ann, subset="training")
    return load_feature_set(feats, gt), gt


def test_head_defaults_by_feature_width():
    from tal_pipeline.train import HEAD_DEFAULTS, WIDE_DIM, head_defaults

    assert head_defaults(128).get("embed_kernel", 1) == 1 and head_defaults(WIDE_DIM - 1) == HEAD_DEFAULTS
    assert head_defaults(WIDE_DIM)["embed_kernel"] == 3 and head_defaults(2048)["output_levels"] == 5
    assert head_defaults(WIDE_DIM)["input_dropout"] == 0.5 and head_defaults(128).get("input_dropout", 0) == 0


def test_overfits_tiny_set(data, tmp_path):
    fs, gt = data
    cfg = TrainConfig(epochs=60, batch_size=6, min_samples_per_epoch=6, window=128, lr=3e-3, warmup_epochs=3, seed=0)
    ckpt = train(fs, tmp_path / "m.pt", cfg, head={**TINY_HEAD, "dropout": 0.0}, progress=False)
    model, meta = load_head(tmp_path / "m.pt")
    assert list(meta.class_names) == fs.class_names and ckpt["features"]["backbone"] == "synthetic"
    dets = {v.video_id: predict_segments(model, v.features, v.times, v.step, v.duration, meta.class_names,
                                         PostprocessConfig()) for v in fs.videos}
    res = evaluate(gt, dets, (0.5,))
    assert res.mAP[0] >= 0.95, res.table()


def test_same_seed_same_bytes_and_resume(data, tmp_path):
    fs, _ = data
    a = train(fs, tmp_path / "a.pt", QUICK, head=TINY_HEAD, progress=False)
    b = train(fs, tmp_path / "b.pt", QUICK, head=TINY_HEAD, progress=False)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert checkpoint_bytes(a) == checkpoint_bytes(b)
    assert not (tmp_path / "a.pt.ckpt").exists()  # the resume state goes once the model is written
    # interrupted after epoch 1, then resumed: same result as the uninterrupted run
    assert train(fs, tmp_path / "c.pt", QUICK, head=TINY_HEAD, progress=False, stop_after=1) == {}
    assert (tmp_path / "c.pt.ckpt").is_file() and not (tmp_path / "c.pt").exists()
    train(fs, tmp_path / "c.pt", QUICK, head=TINY_HEAD, progress=False, resume=True)
    assert (tmp_path / "c.pt").read_bytes() == (tmp_path / "a.pt").read_bytes()
    other = train(fs, tmp_path / "d.pt", TrainConfig(**{**QUICK.__dict__, "seed": 2}), head=TINY_HEAD,
                  progress=False)
    assert not torch.equal(other["state_dict"]["embed.weight"], a["state_dict"]["embed.weight"])


def test_checkpoint_is_plain_data_and_tampering_is_refused(data, tmp_path):
    fs, _ = data
    path = tmp_path / "m.pt"
    ckpt = train(fs, path, QUICK, head=TINY_HEAD, progress=False)
    loaded = torch.load(path, weights_only=True)
    assert loaded["class_names"] == fs.class_names and loaded["input_dim"] == 16
    assert loaded["features"]["step"] == pytest.approx(0.4) and loaded["features"]["weights"] == "synthetic:seed=7"
    assert path.stat().st_size < 5e6
    _, meta = load_head(path)
    assert meta.training["epochs_done"] == 3 and meta.input_dim == 16

    def refused(blob: bytes, match: str):
        bad = tmp_path / "bad.pt"
        bad.write_bytes(blob)
        with pytest.raises(InputError, match=match):
            load_head(bad)

    refused(b"not a checkpoint", "not a tal-pipeline model checkpoint")
    refused(path.read_bytes()[:-100], "not a tal-pipeline model checkpoint")  # truncated

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    buf = io.BytesIO()
    torch.save({"format": "tal-pipeline/head", "x": Evil()}, buf)
    refused(buf.getvalue(), "never loaded")  # code in the pickle never runs
    refused(pickle.dumps({"a": 1}), "not a tal-pipeline model checkpoint")
    refused(checkpoint_bytes({**ckpt, "class_names": "x"}), "class_names")
    refused(checkpoint_bytes({k: v for k, v in ckpt.items() if k != "state_dict"}), "state_dict")
    wrong = dict(ckpt["state_dict"])
    wrong["embed.weight"] = torch.zeros(3, 3, 1)
    refused(checkpoint_bytes({**ckpt, "state_dict": wrong}), "shape")
    refused(checkpoint_bytes({**ckpt, "format_version": 99}), "version")
    assert zipfile.is_zipfile(path)
    with pytest.raises(InputError, match="channels"):
        meta.check_features(15)
    with pytest.raises(InputError, match="backbone"):
        meta.check_features(16, backbone="r3d_18", weights="x")


def test_cli_train_detect_eval(bench_dir, tmp_path):
    feats, ann = bench_dir
    runner = CliRunner()
    model = tmp_path / "model.pt"
    r = runner.invoke(main, ["train", str(feats), "--annotations", str(ann), "-o", str(model), "--epochs", "2",
                             "--hidden-dim", "16", "--window", "128", "--batch-size", "32", "--precision", "fp32", "--final-act", "iou", "-q"])
    assert r.exit_code == 0, r.output
    config = load_head(model)[1].training["config"]
    assert config["precision"] == "fp32" and config["loss"]["final_act"] == "iou"
    pred_json = tmp_path / "pred.json"
    r = runner.invoke(main, ["detect", str(feats), "--features", "--model", str(model), "-o", str(pred_json), "-q"])
    assert r.exit_code == 0, r.output
    out = json.loads(pred_json.read_text())
    assert set(out) >= {"version", "results", "external_data", "videos"}
    assert set(out["results"]) == set(make_benchmark(TINY).features)
    seg = out["results"]["syn_train_0000"][0]
    assert set(seg) == {"label", "score", "segment"} and 0 <= seg["segment"][0] <= seg["segment"][1]
    assert out["external_data"]["backbone"] == "synthetic"
    r = runner.invoke(main, ["eval", str(pred_json), "--annotations", str(ann), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)  # (accuracy is test_overfits_tiny_set's business)
    assert res["tiou"] == pytest.approx([0.3, 0.4, 0.5, 0.6, 0.7]) and all(0 <= m <= 1 for m in res["mAP"])
    # -o DIR/: one file per video
    r = runner.invoke(main, ["detect", str(feats), "--features", "--model", str(model), "-o", str(tmp_path / "d") + "/",
                             "-q", "--top-k", "5"])
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "d").glob("*.json"))
    assert len(files) == 6 and all(len(json.loads(f.read_text())["results"][f.stem]) <= 5 for f in files)


def test_cli_meta_less_features_and_errors(bench_dir, tmp_path):
    feats, ann = bench_dir
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for npy in sorted(feats.glob("*.npy")):  # bare .npy, as ActionFormer distributes them
        np.save(foreign / npy.name, np.load(npy))
    runner = CliRunner()
    model = tmp_path / "m.pt"
    r = runner.invoke(main, ["train", str(foreign), "--annotations", str(ann), "-o", str(model), "--epochs", "1",
                             "--hidden-dim", "16", "--window", "128", "--batch-size", "32", "-q"])
    assert r.exit_code != 0 and "--feature-stride" in r.output
    r = runner.invoke(main, ["train", str(foreign), "--annotations", str(ann), "-o", str(model), "--epochs", "1",
                             "--hidden-dim", "16", "--window", "128", "--batch-size", "32", "-q", "--feature-stride", "4"])
    assert r.exit_code == 0, r.output  # fps from the annotation file's per-video "fps"
    ck = torch.load(model, weights_only=True)
    assert ck["features"]["backbone"] == "unknown" and ck["features"]["step"] == pytest.approx(0.4)
    r = runner.invoke(main, ["detect", str(foreign), "--features", "--model", str(model), "-o", str(tmp_path / "p.json"),
                             "--fps", "10", "--feature-stride", "4", "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["detect", str(foreign), "--features", "--model", str(model), "-o", str(tmp_path / "q.json"),
                             "--annotations", str(ann), "--feature-stride", "4", "-q"])  # per-video fps
    assert r.exit_code == 0, r.output
    q, p = (json.loads((tmp_path / f).read_text())["results"] for f in ("q.json", "p.json"))
    for vid in p:  # same predictions (durations differ by the annotation file's rounding)
        assert [d["score"] for d in q[vid]] == pytest.approx([d["score"] for d in p[vid]])
    (tmp_path / "v.mp4").write_bytes(b"not decoded: the model is refused first")
    r = runner.invoke(main, ["detect", str(tmp_path / "v.mp4"), "--model", str(model), "-o", str(tmp_path / "p.json")])
    # raw video needs the backbone the model was trained on: unknown here, so a clear refusal
    assert r.exit_code == 1 and "unknown backbone" in r.output and "--features" in r.output
    (tmp_path / "bad.pt").write_bytes(b"junk")
    r = runner.invoke(main, ["detect", str(feats), "--features", "--model", str(tmp_path / "bad.pt"), "-o",
                             str(tmp_path / "p.json")])
    assert r.exit_code == 1 and "not a tal-pipeline model checkpoint" in r.output


def test_select_best_keeps_the_best_validation_epoch(data, tmp_path):
    from tal_pipeline.train import validate

    fs, gt = data
    cfg = TrainConfig(**{**QUICK.__dict__, "epochs": 4, "val_every": 1})
    ckpt = train(fs, tmp_path / "b.pt", cfg, head=TINY_HEAD, val_data=fs, val_annotations=gt, progress=False)
    hist = ckpt["training"]["validation"]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    best = max(hist, key=lambda h: h["average_mAP"])  # first of equal scores, as training keeps it
    assert ckpt["training"]["selected_epoch"] == best["epoch"]
    model, _ = load_head(tmp_path / "b.pt")  # the saved weights score what that epoch scored
    assert validate(model, fs, gt)["average_mAP"] == pytest.approx(best["average_mAP"])
    last = train(fs, tmp_path / "l.pt", TrainConfig(**{**cfg.__dict__, "select": "last"}), head=TINY_HEAD,
                 val_data=fs, val_annotations=gt, progress=False)
    assert last["training"]["selected_epoch"] == 4
    assert validate(load_head(tmp_path / "l.pt")[0], fs, gt)["average_mAP"] == pytest.approx(
        hist[-1]["average_mAP"])
    with pytest.raises(ValueError):
        TrainConfig(select="first")


def test_resume_state_from_before_a_new_loss_option_resumes_at_its_default():
    """A resume state written before ``loss.final_act`` existed ran with its default: it resumes
    under today's defaults, and is refused when the run asks for another value."""
    from dataclasses import asdict, replace

    from tal_pipeline.head.losses import LossWeights
    from tal_pipeline.train import STATE_FORMAT, _check_resume

    config = TrainConfig()
    saved = asdict(config)
    del saved["loss"]["final_act"]
    state = {"format": STATE_FORMAT, "train_config": saved}
    _check_resume(state, config, "old.pt.ckpt")  # no error
    iou = replace(config, loss=LossWeights(final_act="iou"))
    with pytest.raises(InputError, match=r"old\.pt\.ckpt: cannot resume with loss="):
        _check_resume(state, iou, "old.pt.ckpt")


def test_precision_auto_resolves_by_hardware_and_bf16_training_is_reproducible(data, tmp_path):
    """``precision="auto"`` trains in bf16 only where the hardware multiplies it; a bf16 run is
    bit-identical run to run, keeps float32 weights, records what it ran in, and is a different
    run from the fp32 one (the autocast really is on)."""
    from dataclasses import replace

    from tal_pipeline.features import cpu_has_native_bf16
    from tal_pipeline.train import resolve_precision

    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    if not torch.cuda.is_available():
        assert resolve_precision("auto", "cuda") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision="fp16")
    fs, _ = data
    bf16, fp32 = replace(QUICK, precision="bf16"), replace(QUICK, precision="fp32")
    a = train(fs, tmp_path / "a.pt", bf16, head=TINY_HEAD, progress=False)
    train(fs, tmp_path / "b.pt", bf16, head=TINY_HEAD, progress=False)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert a["training"]["config"]["precision"] == "bf16"
    assert all(v.dtype == torch.float32 for v in a["state_dict"].values() if v.is_floating_point())
    assert np.isfinite(a["training"]["final_loss"])
    c = train(fs, tmp_path / "c.pt", fp32, head=TINY_HEAD, progress=False)
    assert c["training"]["config"]["precision"] == "fp32"
    assert not torch.equal(a["state_dict"]["embed.weight"], c["state_dict"]["embed.weight"])
    # how fast is not what is learnt: a run started in fp32 resumes on a bf16 machine
    assert train(fs, tmp_path / "d.pt", fp32, head=TINY_HEAD, progress=False, stop_after=1) == {}
    train(fs, tmp_path / "d.pt", bf16, head=TINY_HEAD, progress=False, resume=True)
    assert (tmp_path / "d.pt").is_file()
