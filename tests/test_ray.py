"""`tal extract|detect --ray`: a real Ray instance and a real `ray start` cluster, faults, resume.

Ray binds its servers to every interface and advertises the machine's address, so every Ray
process here runs inside a private network namespace with only loopback up (``unshare --net``,
as root): all traffic stays on 127.0.0.1. Each test runs one shell script in its own namespace;
``ray stop`` ends it there, also on failure.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_extract_cli import _frames  # textured blocks moving 2 px a frame
from videogen import write_video

pytest.importorskip("ray")
if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
    pytest.skip("Ray tests need root and unshare/ip for a loopback-only namespace",
                allow_module_level=True)

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
# tiny frames and the seeded weights: seconds per video on one core; 1 thread per worker so that
# two workers fit on a 2-core machine (the local reference runs with the same --threads)
FAST = ["--weights", "seeded", "--size", "32", "--chunk-frames", "16", "--no-progress",
        "--threads", "1"]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """4 good clips of 1.6-2.2 s and one corrupt .mp4."""
    root = tmp_path_factory.mktemp("videos")
    for k in range(4):
        write_video(root / f"clip{k}.mp4", _frames(16 + 2 * k, k), fps=10, codec="mpeg4")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    return root


@pytest.fixture(scope="module")
def local_out(videos, tmp_path_factory) -> Path:
    """The reference: the local path, same settings."""
    out = tmp_path_factory.mktemp("local") / "feats"
    res = _tal("extract", videos, "-o", out, *FAST)
    assert res.returncode == 1, res.stderr
    return out


def _tal(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "tal"), *map(str, args)], check=False, capture_output=True, text=True,
                          env=env, timeout=300)


def _in_namespace(script: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a bash script in a fresh network namespace with only loopback up."""
    body = "ip link set lo up\n" + textwrap.dedent(script)
    full_env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run(["unshare", "--net", "bash", "-c", body], check=False, capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _same_outputs(a: Path, b: Path) -> None:
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        if name == "failures.txt":
            assert sorted(fa[name].splitlines()) == sorted(fb[name].splitlines())
        elif name.endswith(".json"):  # the meta names no run-specific thing: bytes must agree
            assert fa[name] == fb[name], name
        else:
            assert fa[name] == fb[name], f"{name} differs"


def test_local_ray_matches_local_path(videos, local_out, tmp_path):
    out = tmp_path / "feats"
    cmd = shlex.join(["tal", "extract", str(videos), "-o", str(out), *FAST, "--ray", "--workers", "2"])
    res = _in_namespace(f"{cmd}; rc=$?; ray stop --force >/dev/null 2>&1; exit $rc")
    assert res.returncode == 1, res.stderr  # the corrupt file fails, alone
    assert f"tal: {videos / 'broken.mp4'}: " in res.stderr
    assert "4 done, 0 skipped, 1 failed" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "f").exists()  # nothing was made

    res = _tal("extract", videos / "clip0.mp4", "-o", tmp_path / "f", *FAST, "--ray", "nowhere")
    assert res.returncode == 2 and "expected HOST:PORT or auto" in res.stderr, res.stderr
    _same_outputs(out, local_out)  # bitwise: features, metas, failure list
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp or lock left

    res = _in_namespace(f"{cmd}; rc=$?; ray stop --force >/dev/null 2>&1; exit $rc")
    assert res.returncode == 1 and "0 done, 4 skipped, 1 failed" in res.stderr, res.stderr


def test_cluster_with_token_auth_and_a_killed_worker(videos, local_out, tmp_path):
    """`ray start --head` (token authentication on), `tal extract --ray 127.0.0.1:PORT`; one
    worker process is SIGKILLed inside a video: it is retried elsewhere, nothing is lost."""
    out, log = tmp_path / "feats", tmp_path / "workers.log"
    cmd = shlex.join(["tal", "extract", str(videos), "-o", str(out), *FAST, "--workers", "2"])
    res = _in_namespace(
        f"""
        set -u
        unset RAY_AUTH_MODE  # tal must turn token authentication on by itself
        port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        trap 'ray stop --force >/dev/null 2>&1' EXIT
        ray start --head --port "$port" --num-cpus 2 --disable-usage-stats \\
            --include-dashboard=false >/dev/null 2>&1 || {{ echo "ray start failed" >&2; exit 99; }}
        # kill the first worker process as soon as it is inside a video (once)
        ( for i in $(seq 600); do
            if [ -s {shlex.quote(str(log))} ]; then
              kill -9 "$(head -n1 {shlex.quote(str(log))} | cut -d' ' -f1)"; echo killed >&2; break
            fi; sleep 0.05
          done ) &
        {cmd} --ray "127.0.0.1:$port"
        """,
        env={"TAL_WORKER_LOG": str(log)},
    )
    assert res.returncode == 1, res.stderr
    assert "killed" in res.stderr
    assert "4 done, 0 skipped, 1 failed" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "f").exists()  # nothing was made

    res = _tal("extract", videos / "clip0.mp4", "-o", tmp_path / "f", *FAST, "--ray", "nowhere")
    assert res.returncode == 2 and "expected HOST:PORT or auto" in res.stderr, res.stderr
    pids = {line.split()[0] for line in log.read_text().splitlines()}
    assert len(pids) >= 2  # the killed one and its replacement(s)
    _same_outputs(out, local_out)


def test_driver_killed_then_resume(videos, local_out, tmp_path):
    """SIGKILL the driver once two videos are done; the rerun redoes nothing finished."""
    out = tmp_path / "feats"
    cmd = shlex.join(["tal", "extract", str(videos), "-o", str(out), *FAST, "--workers", "1",
                      "--ray"])
    res = _in_namespace(
        f"""
        {cmd} & drv=$!
        for i in $(seq 1200); do
          n=$(ls {shlex.quote(str(out))}/*.json 2>/dev/null | wc -l)
          if [ "$n" -ge 2 ]; then kill -9 $drv; echo "driver killed at $n" >&2; break; fi
          sleep 0.05
        done
        wait $drv; ray stop --force >/dev/null 2>&1; exit 0
        """
    )
    assert "driver killed" in res.stderr, res.stderr
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert 2 <= len(done) < 4
    for name in done:  # every output present is complete: its .npy pair is there
        assert json.loads((out / name).read_text())["num_features"] > 0
        assert (out / name).with_suffix(".npy").is_file()

    res = _in_namespace(f"{cmd}; rc=$?; ray stop --force >/dev/null 2>&1; exit $rc")
    assert res.returncode == 1, res.stderr
    assert f"{4 - len(done)} done, {len(done)} skipped, 1 failed" in res.stderr, res.stderr
    assert {n: (out / n).stat().st_mtime_ns for n in done} == done  # untouched
    _same_outputs(out, local_out)


def test_unreachable_cluster_is_one_line(videos, tmp_path):
    res = _in_namespace(shlex.join(["tal", "extract", str(videos / "clip0.mp4"), "-o",
                                    str(tmp_path / "f"), *FAST, "--ray", "127.0.0.1:1"]),
                        timeout=200)
    assert res.returncode == 1, res.stderr  # the machine, not the command line
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("tal: error: --ray: cannot connect to the Ray cluster at 127.0.0.1:1"), lines
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "f").exists()  # nothing was made

    res = _tal("extract", videos / "clip0.mp4", "-o", tmp_path / "f", *FAST, "--ray", "nowhere")
    assert res.returncode == 2 and "expected HOST:PORT or auto" in res.stderr, res.stderr


def test_detect_on_ray_matches_local(videos, tmp_path):
    """`tal detect DIR -o x.json --format json,csv --ray`: workers write the parts, the driver
    merges; the merged file, the CSV and the failure list equal the local path's, byte for byte."""
    args = [str(videos), "--format", "json,csv", "--no-progress", "--threads", "1"]
    res = _tal("detect", *args, "-o", tmp_path / "local" / "x.json")
    assert res.returncode == 1, res.stderr  # the corrupt file
    cmd = shlex.join(["tal", "detect", *args, "-o", str(tmp_path / "ray" / "x.json"), "--ray",
                      "--workers", "2"])
    res = _in_namespace(f"{cmd}; rc=$?; ray stop --force >/dev/null 2>&1; exit $rc")
    assert res.returncode == 1, res.stderr
    assert "4 done, 0 skipped, 1 failed" in res.stderr
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")
    assert sorted(json.loads((tmp_path / "ray" / "x.json").read_text())["results"]) == [
        f"clip{k}" for k in range(4)]
