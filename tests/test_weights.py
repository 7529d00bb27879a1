"""Weights: seeded checksum, Kinetics download handling (offline and placed file), local files."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from tal_pipeline import weights as W
from tal_pipeline.errors import InputError, NotAvailableError, TalError

# The seeded r3d_18 checksum, written here a second time on purpose: a change of the generator
# or of the constant in weights.py must show up as a failing test, not pass silently.
SEEDED_R3D18 = "35c8acf1e59fe6e9ddbe40cb3ba6cb037ab3b952cb88140b82bf9df0d0a33c72"


def test_seeded_checksum_is_stable():
    a = W.load_weights("r3d_18", "seeded")
    assert a.sha256 == W.SEEDED_SHA256["r3d_18"] == SEEDED_R3D18
    assert a.label == f"seeded:sha256:{SEEDED_R3D18}"
    b = W.seeded_state_dict("r3d_18")
    assert all(torch.equal(a.state_dict[k], b[k]) for k in b)


def test_seeded_generator_uses_exact_float32_steps():
    rng = np.random.Generator(np.random.PCG64(7))
    raw = np.random.Generator(np.random.PCG64(7)).bit_generator.random_raw(1000)
    u = W._uniform(rng, 1000)
    assert u.dtype == np.float32 and u.min() >= -1.0 and u.max() < 1.0
    expected = (raw >> np.uint64(40)).astype(np.float64) * 2.0**-23 - 1.0  # exact in float64
    assert np.array_equal(u.astype(np.float64), expected)


def test_seeded_init_scale():
    sd = W.seeded_state_dict("r3d_18")
    w = sd["layer1.0.conv1.0.weight"]  # fan_in 64 * 27
    assert abs(float(w.std()) - (2.0 / (64 * 27)) ** 0.5) < 0.002
    assert torch.equal(sd["layer1.0.conv1.1.weight"], torch.ones(64))
    assert torch.equal(sd["layer1.0.conv1.1.running_var"], torch.ones(64))


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


def _offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def test_kinetics_offline_says_where_to_put_the_file(torch_home, monkeypatch):
    _offline(monkeypatch)
    with pytest.raises(NotAvailableError) as err:
        W.load_weights("r3d_18", "kinetics400", progress=False)
    msg = str(err.value)
    target = torch_home / "hub" / "checkpoints" / "r3d_18-b3b3357e.pth"
    assert "\n" not in msg
    assert str(target) in msg
    assert "https://download.pytorch.org/models/r3d_18-b3b3357e.pth" in msg
    assert "--weights seeded" in msg
    assert W.hub_checkpoint_path(W.resolve("r3d_18", "kinetics400")) == target


def _save_random_r3d18(path):
    from torchvision.models.video import r3d_18

    torch.manual_seed(5)
    sd = r3d_18(weights=None).state_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, path)
    return sd


def test_kinetics_file_placed_in_torch_home_loads(torch_home, monkeypatch):
    _offline(monkeypatch)  # the placed file must be used without any download
    target = torch_home / "hub" / "checkpoints" / "r3d_18-b3b3357e.pth"
    sd = _save_random_r3d18(target)
    loaded = W.load_weights("r3d_18", "kinetics400", check_hash=False, progress=False)
    assert loaded.spec.id == "kinetics400"
    assert torch.equal(loaded.state_dict["layer3.1.conv2.0.weight"], sd["layer3.1.conv2.0.weight"])
    assert not any(k.startswith("fc.") for k in loaded.state_dict)
    # with the hash check (the default), a file that is not torchvision's is refused, clearly
    with pytest.raises(TalError, match="does not match"):
        W.load_weights("r3d_18", "kinetics400", progress=False)


def test_local_state_dict_checked_key_by_key(tmp_path):
    good = tmp_path / "good.pth"
    sd = _save_random_r3d18(good)
    loaded = W.load_weights("r3d_18", good)
    assert loaded.spec.id == "file"
    assert torch.equal(loaded.state_dict["stem.0.weight"], sd["stem.0.weight"])

    missing = dict(sd)
    del missing["layer2.0.conv1.0.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(InputError, match="missing keys.*layer2.0.conv1.0.weight"):
        W.load_weights("r3d_18", tmp_path / "missing.pth")

    wrong = dict(sd)
    wrong["stem.0.weight"] = torch.zeros(64, 2, 3, 7, 7)
    torch.save(wrong, tmp_path / "wrong.pth")
    with pytest.raises(InputError, match="wrong shape.*stem.0.weight"):
        W.load_weights("r3d_18", tmp_path / "wrong.pth")

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable state dict"):
        W.load_weights("r3d_18", tmp_path / "junk.pth")
    with pytest.raises(InputError, match="no such weights file"):
        W.load_weights("r3d_18", tmp_path / "absent.pth")
    with pytest.raises(InputError, match="unknown weights"):
        W.load_weights("r3d_18", "imagenet")


def test_specs_carry_the_transform():
    from tal_pipeline.transforms import KINETICS_R3D

    for name in ("kinetics400", "seeded"):
        assert W.resolve("r3d_18", name).transform == KINETICS_R3D
    assert W.resolve("i3d_r50", "kinetics400").transform.crop == 224


# ----------------------------------------------------------------------------- the seeded cache


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tal-pipeline"


def _generation_forbidden(monkeypatch):
    def refuse(backbone):
        raise AssertionError("generated although the cache file verifies")

    monkeypatch.setattr(W, "_seeded_tensors", refuse)


def test_seeded_cache_missing_is_built_then_read(cache_home, monkeypatch):
    path = W.seeded_cache_path("r3d_18")
    assert path.parent == cache_home and not path.exists()
    built = W.load_seeded_tensors("r3d_18")  # generated, verified, written
    assert path.is_file() and not list(cache_home.glob("*.tmp"))  # atomic: no temp left
    assert W.state_checksum(built) == SEEDED_R3D18
    _generation_forbidden(monkeypatch)
    read = W.load_seeded_tensors("r3d_18")
    assert W.state_checksum(read) == SEEDED_R3D18
    assert all(torch.equal(read[k], built[k]) for k in built)
    w = read["layer1.0.conv1.0.weight"]  # layout as built: channels_last, no copy needed later
    assert w.is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize("damage", ["flip_payload_byte", "truncate", "garbage_header", "empty"])
def test_seeded_cache_corrupt_is_rebuilt(cache_home, damage):
    W.load_seeded_tensors("r3d_18")
    path = W.seeded_cache_path("r3d_18")
    data = bytearray(path.read_bytes())
    if damage == "flip_payload_byte":
        data[len(data) // 2] ^= 0x40  # one bit inside the tensors
    elif damage == "truncate":
        data = data[: len(data) - 1000]
    elif damage == "garbage_header":
        data[8:40] = b"x" * 32
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    assert W.read_seeded_cache(path, "r3d_18", SEEDED_R3D18) is None  # refused, never used
    sd = W.load_seeded_tensors("r3d_18")  # rebuilt from the seed
    assert W.state_checksum(sd) == SEEDED_R3D18
    assert W.read_seeded_cache(path, "r3d_18", SEEDED_R3D18) is not None  # and rewritten


def test_seeded_cache_with_a_damaged_layout_is_refused(cache_home):
    import json

    W.load_seeded_tensors("r3d_18")
    path = W.seeded_cache_path("r3d_18")
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    payload = data[8 + n + (-(8 + n) % 64) :]
    a, b = header["entries"][0], header["entries"][1]  # swap two tensors' places, digest kept
    a["offset"], b["offset"] = b["offset"], a["offset"]
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * (-(8 + len(raw)) % 64) + payload)
    assert W.read_seeded_cache(path, "r3d_18", SEEDED_R3D18) is None


def test_seeded_cache_of_other_weights_is_not_used(cache_home):
    W.load_seeded_tensors("r3d_18")
    path = W.seeded_cache_path("r3d_18")
    assert W.read_seeded_cache(path, "r3d_18", "0" * 64) is None
    assert W.read_seeded_cache(path, "i3d_r50", SEEDED_R3D18) is None


def test_seeded_cache_unwritable_folder_still_works(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    sd = W.load_seeded_tensors("r3d_18")
    assert W.state_checksum(sd) == SEEDED_R3D18
    assert blocker.is_file()
