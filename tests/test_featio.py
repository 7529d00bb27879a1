"""Feature files and atomic writes."""

import json
import os

import numpy as np
import pytest

from tal_pipeline.errors import InputError
from tal_pipeline.featio import (
    FeatureMeta,
    is_complete,
    list_feature_files,
    load_features,
    save_features,
)
from tal_pipeline.fsutil import atomic_write_json, remove_stale_temps


def _meta(t=5, d=4):
    return FeatureMeta(
        video="v.mp4", duration=2.0, fps=10.0, feature_stride=4, t0=0.15, step=0.4,
        backbone="r3d_18", weights="seeded:sha256:abc", streams=("rgb", "flow"), dim=d,
        num_features=t,
    )


def test_roundtrip_and_times(tmp_path):
    arr = np.arange(20, dtype=np.float32).reshape(5, 4)
    npy, js = save_features(tmp_path, "vid", arr, _meta())
    assert npy.name == "vid.npy" and js.name == "vid.json"
    got, meta = load_features(npy)
    np.testing.assert_array_equal(got, arr)
    assert meta == _meta()
    np.testing.assert_allclose(meta.times(), [0.15, 0.55, 0.95, 1.35, 1.75])
    assert is_complete(tmp_path, "vid")
    assert list_feature_files(tmp_path) == [npy]
    # the .npy alone is a plain array, loadable without pickle
    assert np.load(npy, allow_pickle=False).shape == (5, 4)


def test_shape_mismatch_is_refused(tmp_path):
    with pytest.raises(ValueError):
        save_features(tmp_path, "vid", np.zeros((3, 4), np.float32), _meta())
    np.save(tmp_path / "x.npy", np.zeros((3, 4), np.float32))
    atomic_write_json(tmp_path / "x.json", _meta().to_json())
    with pytest.raises(InputError, match="does not match its meta"):
        load_features(tmp_path / "x.npy")
    assert not is_complete(tmp_path, "x")


def test_metaless_needs_fps_and_stride(tmp_path):
    np.save(tmp_path / "f.npy", np.ones((10, 2048), np.float32))
    with pytest.raises(InputError, match="--fps and --feature-stride"):
        load_features(tmp_path / "f.npy")
    arr, meta = load_features(tmp_path / "f.npy", fps=30.0, feature_stride=4)
    assert arr.shape == (10, 2048)
    assert meta.step == pytest.approx(4 / 30)
    assert meta.t0 == pytest.approx(8 / 30)  # centre of a 16-frame window


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "not a readable"),
        (b"garbage", "not a readable"),
    ],
)
def test_corrupt_npy(tmp_path, content, match):
    (tmp_path / "c.npy").write_bytes(content)
    with pytest.raises(InputError, match=match):
        load_features(tmp_path / "c.npy", fps=10, feature_stride=4)


def test_bad_arrays_and_meta(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(5, np.float32))
    with pytest.raises(InputError, match="2-D"):
        load_features(tmp_path / "a.npy", fps=10, feature_stride=4)
    np.save(tmp_path / "n.npy", np.full((2, 2), np.nan, np.float32))
    with pytest.raises(InputError, match="NaN"):
        load_features(tmp_path / "n.npy", fps=10, feature_stride=4)
    np.save(tmp_path / "o.npy", np.array([[1, 2]], dtype=object), allow_pickle=True)
    with pytest.raises(InputError):
        load_features(tmp_path / "o.npy", fps=10, feature_stride=4)
    np.save(tmp_path / "m.npy", np.zeros((5, 4), np.float32))
    d = _meta().to_json()
    del d["step"]
    (tmp_path / "m.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match="lacks 'step'"):
        load_features(tmp_path / "m.npy")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_features(tmp_path / "m.npy")


def test_atomic_write_leaves_no_temp(tmp_path):
    atomic_write_json(tmp_path / "o.json", {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["o.json"]
    (tmp_path / ".o.json.abc.part").write_text("partial")
    assert remove_stale_temps(tmp_path) == 1
    assert os.listdir(tmp_path) == ["o.json"]


def test_a_fifo_is_refused_not_opened(tmp_path):
    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)  # np.load would wait for a writer forever
    with pytest.raises(InputError, match="not a regular file"):
        load_features(fifo, fps=10.0, feature_stride=4)
