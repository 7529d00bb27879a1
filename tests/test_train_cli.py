"""``tal train --head KEY=VALUE``: any head option from the command line."""

import pytest
import torch
from click.testing import CliRunner

from benchmarks.synthetic import SyntheticConfig, make_benchmark, write_benchmark
from tal_pipeline.cli import main
from tal_pipeline.commands.train import parse_head_options
from tal_pipeline.errors import InputError
from tal_pipeline.head.model import HeadConfig

TINY = SyntheticConfig(num_classes=2, dim=16, num_train=4, num_test=0, min_steps=60, max_steps=80,
                       max_instances=2, min_len=8, max_len=20, distractors=1, signal=0.8, seed=3)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    return write_benchmark(make_benchmark(TINY), tmp_path_factory.mktemp("syn"))


def test_values_parsed_into_the_field_types():
    got = parse_head_options(["hidden_dim=64", "dropout=0.5", "tpp=false", "stem_dilations=1,2,4,8",
                              "tpp_strides=", "score-fusion=actionness", "stem_layers=4"])
    assert got == {"hidden_dim": 64, "dropout": 0.5, "tpp": False, "stem_dilations": (1, 2, 4, 8),
                   "tpp_strides": (), "score_fusion": "actionness", "stem_layers": 4}
    assert type(got["hidden_dim"]) is int and type(got["dropout"]) is float
    # what the parser gives is what HeadConfig takes (and stores in a checkpoint)
    cfg = HeadConfig(input_dim=8, num_classes=2, **got)
    assert HeadConfig.from_dict(cfg.to_dict()) == cfg
    assert parse_head_options(["tpp=on", "tsa=plain", "embed_kernel=3"]) == {"tpp": True, "tsa": "plain",
                                                                            "embed_kernel": 3}
    assert parse_head_options([]) == {}


@pytest.mark.parametrize("pair, words", [
    ("hiden_dim=64", ["unknown head option", "hidden_dim"]),  # the known keys are listed
    ("input_dim=512", ["set by the features"]),
    ("num_classes=3", ["set by the features"]),
    ("hidden_dim", ["KEY=VALUE"]),
    ("hidden_dim=abc", ["integer"]),
    ("dropout=lots", ["number"]),
    ("tpp=maybe", ["true or false"]),
    ("stem_dilations=1,x", ["integer"]),
])
def test_bad_pairs_are_one_line_errors(pair, words):
    with pytest.raises(InputError) as info:
        parse_head_options([pair])
    msg = str(info.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_key_twice_is_an_error():
    with pytest.raises(InputError, match="twice"):
        parse_head_options(["dropout=0.5", "dropout=0.6"])


def _train(bench_dir, tmp_path, *extra):
    feats, ann = bench_dir
    model = tmp_path / "m.pt"
    r = CliRunner().invoke(main, ["train", str(feats), "--annotations", str(ann), "-o", str(model), "--epochs", "1",
                                  "--window", "64", "--batch-size", "8", "-q", *extra])
    return r, model


def test_head_options_reach_the_checkpoint(bench_dir, tmp_path):
    r, model = _train(bench_dir, tmp_path, "--head", "hidden_dim=24", "--head", "stem_layers=3",
                      "--head", "stem_dilations=1,2,4", "--head", "output_levels=1", "--head", "dropout=0.6",
                      "--head", "score_fusion=class", "--head", "tsa=plain")
    assert r.exit_code == 0, r.output
    ck = torch.load(model, weights_only=True)
    cfg = HeadConfig.from_dict(ck["head_config"])
    assert (cfg.hidden_dim, cfg.stem_layers, cfg.stem_dilations, cfg.output_levels, cfg.dropout,
            cfg.score_fusion, cfg.tsa) == (24, 3, (1, 2, 4), 1, 0.6, "class", "plain")
    assert cfg.input_dim == TINY.dim and cfg.num_classes == TINY.num_classes
    assert ck["state_dict"]["embed.weight"].shape[0] == 24  # the model was built with them, not only recorded
    assert len([k for k in ck["state_dict"] if k.startswith("stem.") and k.endswith("conv.weight")]) == 3


def test_cli_errors_before_training(bench_dir, tmp_path):
    r, model = _train(bench_dir, tmp_path, "--head", "hidden=3")
    assert r.exit_code != 0 and "unknown head option" in r.output and not model.exists()
    # the same key through its own option and --head with another value: ambiguous
    r, model = _train(bench_dir, tmp_path, "--hidden-dim", "16", "--head", "hidden_dim=32")
    assert r.exit_code != 0 and "hidden_dim" in r.output and not model.exists()
    r, model = _train(bench_dir, tmp_path, "--tsa", "plain", "--head", "tsa=none")
    assert r.exit_code != 0 and "tsa" in r.output
    # a value HeadConfig refuses is the same kind of one-line error
    r, model = _train(bench_dir, tmp_path, "--head", "embed_kernel=2")
    assert r.exit_code != 0 and "embed_kernel" in r.output and "Traceback" not in r.output


def test_head_tsa_without_its_own_option_is_not_a_clash(bench_dir, tmp_path):
    r, model = _train(bench_dir, tmp_path, "--head", "tsa=none", "--head", "tpp=false", "--head", "hidden_dim=16")
    assert r.exit_code == 0, r.output
    cfg = HeadConfig.from_dict(torch.load(model, weights_only=True)["head_config"])
    assert (cfg.tsa, cfg.tpp) == ("none", False)


@pytest.mark.parametrize("flag, windows", [(["--min-windows", "20"], 20), ([], 240)])
def test_min_windows_sets_the_iterations_of_an_epoch(bench_dir, tmp_path, flag, windows):
    """4 training videos of 60-80 steps are 4 windows: an epoch cycles them up to the minimum
    (``--min-windows``, default 240), in batches of 8."""
    r, model = _train(bench_dir, tmp_path, *flag, "--head", "hidden_dim=8")
    assert r.exit_code == 0, r.output
    training = torch.load(model, weights_only=True)["training"]
    assert training["config"]["min_samples_per_epoch"] == windows
    assert training["iterations"] == -(-windows // 8)
