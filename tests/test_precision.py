"""Backbone precision: what ``auto`` picks, what the meta records, bf16 against fp32 (tiny inputs:
where the CPU lacks native bf16, oneDNN emulates it and is slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cpucaps import needs_bf16_kernels  # tests/ is on the path

from tal_pipeline import features
from tal_pipeline.features import FeatureExtractor, auto_precision, cpu_has_native_bf16
from tal_pipeline.pipeline import Detector

SIZE = 32  # frame side, pixels (tiny: the bf16 path may be emulated here)


def test_auto_precision_follows_the_device_and_the_cpu(monkeypatch):
    assert auto_precision("cuda") == "fp16"
    assert auto_precision("cuda:1") == "fp16"
    monkeypatch.setattr(features, "cpu_has_native_bf16", lambda: True)
    assert auto_precision("cpu") == "bf16"
    monkeypatch.setattr(features, "cpu_has_native_bf16", lambda: False)
    assert auto_precision("cpu") == "fp32"


def test_emulated_bf16_is_not_native(monkeypatch):
    # oneDNN calls bf16 "supported" on any AVX-512 x86 CPU; without AVX512_BF16 or AMX it
    # emulates it, slower than fp32: auto must then stay fp32
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not cpu_has_native_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_has_native_bf16()
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    assert not cpu_has_native_bf16()  # oneDNN has no bf16 kernels at all


def test_auto_is_resolved_and_recorded(monkeypatch):
    monkeypatch.setattr(features, "cpu_has_native_bf16", lambda: False)
    fx = FeatureExtractor(weights="seeded", streams=("flow",), size=SIZE, chunk_frames=8)
    assert fx.options.precision == "fp32"
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (8, SIZE, SIZE, 3), dtype=np.uint8)
    flow = rng.normal(0, 2, (8, 2, SIZE, SIZE)).astype(np.float32)
    assert fx.extract_frames(frames, flow).meta.extra["precision"] == "fp32"


@pytest.fixture(scope="module")
def clip():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (12, SIZE, SIZE, 3), dtype=np.uint8)
    flow = rng.normal(0, 3, (12, 2, SIZE, SIZE)).astype(np.float32)
    return frames, flow


@needs_bf16_kernels
def test_bf16_features_are_close_to_fp32_and_recorded(clip):
    frames, flow = clip
    out = {
        p: FeatureExtractor(weights="seeded", precision=p, size=SIZE, chunk_frames=8).extract_frames(
            frames, flow
        )
        for p in ("fp32", "bf16")
    }
    a, b = out["fp32"].array, out["bf16"].array
    assert b.dtype == np.float32 and b.shape == a.shape == (3, 1024)
    rel = np.linalg.norm(a - b) / np.linalg.norm(a)
    assert 0 < rel < 3e-2  # bf16 really ran (not bitwise fp32), and stayed close
    assert out["bf16"].meta.extra["precision"] == "bf16"
    assert out["bf16"].meta.weights == out["fp32"].meta.weights  # same weights identity


@needs_bf16_kernels
def test_detector_takes_features_of_any_precision(clip):
    frames, flow = clip
    det = Detector.load("demo", build_extractor=False)
    found = {}
    for p in ("fp32", "bf16"):
        fx = FeatureExtractor(
            backbone=det.meta.backbone, weights="seeded", streams=("flow",), precision=p, size=SIZE, chunk_frames=8
        )
        det.check_extractor(fx)  # same weights checksum whatever the precision
        feats = fx.extract_frames(frames, flow)
        found[p] = det.detect_features(feats.array, feats.meta, video="clip")
        assert found[p].video_meta()["precision"] == p
    assert found["fp32"].duration == found["bf16"].duration


def test_results_record_the_precision_used():
    det = Detector.load("demo", precision="fp32")
    assert det.extractor.options.precision == "fp32"
    assert det.external_data()["precision"] == "fp32"
    assert det.provenance("video")["precision"] == "fp32"  # resumes never mix precisions
    auto = Detector.load("demo")
    assert auto.external_data()["precision"] == auto_precision("cpu")


def test_bf16_is_refused_up_front_where_the_cpu_has_no_bf16_convolutions(monkeypatch):
    """An AVX2-only CPU (Zen 3) cannot run oneDNN's bf16 convolutions: one clear error before any
    video, not the same RuntimeError for every video of a batch."""
    monkeypatch.setattr(features, "onednn_runs_bf16", lambda: False)
    with pytest.raises(features.InputError, match="precision bf16: this CPU has no bf16 convolutions"):
        FeatureExtractor(precision="bf16", device="cpu", weights="seeded")
    assert FeatureExtractor(precision="fp32", device="cpu", weights="seeded").options.precision == "fp32"
