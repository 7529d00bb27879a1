"""`tal extract|detect --ray`: a real Ray instance and real `ray start` clusters (a head and
two worker nodes), lost nodes and workers, a killed driver, wrong addresses and tokens.

Ray binds its servers to every interface and advertises the machine's address, so every Ray
process here runs inside private network and PID namespaces with only loopback up (``unshare
--net --pid``, as root): all traffic stays on 127.0.0.x, and every Ray process ends with the
namespace's shell, also on failure. Worker nodes listen on 127.0.0.2 and 127.0.0.3, so their
raylets can be told apart and one killed.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
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
    """Run a bash script in fresh network and PID namespaces with only loopback up: every Ray
    process it starts ends with it. Its own HOME (no token file unless the script makes one) and
    RAY_TMPDIR (no other run's cluster to join)."""
    with tempfile.TemporaryDirectory(prefix="tr") as own:  # short: Ray's socket paths
        body = "ip link set lo up\n" + textwrap.dedent(script)
        full_env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HOME": f"{own}/home",
                    "RAY_TMPDIR": own, **(env or {})}
        full_env.pop("RAY_AUTH_MODE", None)
        full_env.pop("RAY_AUTH_TOKEN", None)
        full_env.pop("RAY_ADDRESS", None)
        os.makedirs(f"{own}/home")
        return subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c", body],
                              check=False, capture_output=True, text=True, env=full_env, timeout=timeout)


def _no_ray_noise(res: subprocess.CompletedProcess) -> None:
    """Nothing of Ray's on stdout; on stderr none of its log lines, colours or tracebacks."""
    assert res.stdout == "", res.stdout[:2000]
    for mark in ("Traceback", "\x1b[", "(raylet)", "[state-dump]", "network_util", "INFO ",
                 "WARNING", "RAY_BACKEND_LOG_LEVEL", "ray_remote_args", "Deprecat"):
        assert mark not in res.stderr, (mark, res.stderr[:3000])


def _nothing_made(folder: Path) -> None:
    """A run that could not reach its cluster wrote nothing, not even its output folder."""
    assert not folder.exists(), list(folder.iterdir())


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
    res = _in_namespace(f"{cmd}")
    assert res.returncode == 1, res.stderr  # the corrupt file fails, alone
    assert f"tal: {videos / 'broken.mp4'}: " in res.stderr
    assert "4 done, 0 skipped, 1 failed" in res.stderr
    _no_ray_noise(res)
    _same_outputs(out, local_out)  # bitwise: features, metas, failure list
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp or lock left


# the head (127.0.0.1) holds no worker, two worker nodes (127.0.0.2, 127.0.0.3) one each: the
# one that loses its machine is whichever is first to start videos, the other takes over
CLUSTER = """
set -u
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ray start --head --port "$port" --num-cpus 0 --disable-usage-stats --include-dashboard=false \\
    >/dev/null 2>&1 || { echo "ray start failed" >&2; exit 99; }
$HEAD_ONLY
for ip in 127.0.0.2 127.0.0.3; do
  ray start --address "127.0.0.1:$port" --node-ip-address $ip --num-cpus 1 \\
      --disable-usage-stats >/dev/null 2>&1 || { echo "node $ip failed" >&2; exit 98; }
done
"""

# Watches TAL_WORKER_LOG. With `worker` 1: SIGKILLs the first worker process to start a good
# video, 0.05 s into it (a worker death). Then the lost machine: `delay` s after the `nth` good
# video start on one worker node (the next one if that video ended meanwhile: the kill must land
# inside a video), SIGKILLs that node's raylet and every process it started at the same moment (a
# raylet alone killed leaves its workers running a while). Prints "killed-worker <video id>
# <pid>" and "killed-node <video id> <pid> <node ip>" on stderr.
WATCH = r'''
import os, sys, time
log, nth, delay, worker = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4] == "1"
def raylet(ip):
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if args[0].endswith(b"raylet/raylet") and f"--node_ip_address={ip}".encode() in args:
            return int(pid)
def parent(pid, cache={}):
    if pid not in cache:
        try:
            cache[pid] = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except OSError:
            cache[pid] = None
    return cache[pid]
def events():
    try:
        return [ln.split()[:3] for ln in open(log).read().splitlines()]
    except OSError:
        return []
def running():  # good videos started and not ended, in order, with their node
    ev = events()
    ended = {(p, v) for p, v, e in ev if e != "start"}
    return [(p, v, nodes.get(parent(int(p)))) for p, v, e in ev
            if e == "start" and v != "broken" and (p, v) not in ended and p not in dead]
nodes = {raylet(ip): ip for ip in ("127.0.0.2", "127.0.0.3")}
seen = {}  # node ip -> good video starts seen there
dead = set()  # the pid killed by the worker kill
for _ in range(3000):
    now = running()
    if worker and now:
        time.sleep(0.05)
        p, v, _ = now[0]
        if (p, v) in [(q, w) for q, w, _ in running()]:
            os.kill(int(p), 9)
            dead.add(p)
            print("killed-worker", v, p, file=sys.stderr, flush=True)
            worker = False
        continue
    for p, v, ip in now:
        seen.setdefault(ip, set()).add((p, v))
    hit = [(p, v, ip) for p, v, ip in now if ip and len(seen[ip]) >= nth]
    if hit:
        p, v, ip = hit[0]
        time.sleep(delay)
        if (p, v) not in [(q, w) for q, w, _ in running()]:
            continue  # it ended first: the next one
        target = [n for n, i in nodes.items() if i == ip][0]
        doomed = [int(q) for q in filter(str.isdigit, os.listdir("/proc")) if parent(int(q)) == target]
        for q in [target, *doomed]:
            os.kill(q, 9)
        print("killed-node", v, p, ip, file=sys.stderr, flush=True)
        break
    time.sleep(0.05)
'''


def _killed_inside(stderr: str, log: Path, kind: str) -> str:
    """The video the watcher's kill of ``kind`` landed in; asserts that the killed process never
    ended it and that another process did."""
    line = next(ln for ln in stderr.splitlines() if ln.startswith(f"killed-{kind} "))
    _, vid, pid = line.split()[:3]
    events = [ln.split()[:3] for ln in log.read_text().splitlines()]
    assert not [e for e in events if e[:2] == [pid, vid] and e[2] != "start"], events
    # another process ended it: "done", or "skipped" when the kill landed after the killed try
    # committed the output but before it logged "done" (the driver counts that as done: the
    # summary assertion of the caller checks it; the outputs' bytes are checked too)
    assert [e for e in events if e[1] == vid and e[2] in ("done", "skipped") and e[0] != pid], events
    return vid


@pytest.mark.parametrize("when", ["early", "late"])
def test_a_lost_node_loses_nothing(videos, local_out, tmp_path, when):
    """A head and two worker nodes; one worker node's machine is lost (its raylet and workers
    SIGKILLed) while its worker is inside a video: early (its first video, as its worker has just
    been set up) or late (its second one, after a worker process died inside its first video).
    Every good video is done, bitwise as on one machine; one line names the lost node; nothing
    partial or locked is left.

    Early runs on a cluster with token authentication, which `tal` turns on by itself (a wrong
    and a missing token are one line each first); late on a cluster without it, while a token
    file lies in HOME: `tal` must ask the cluster, not the file."""
    out, log = tmp_path / "feats", tmp_path / "workers.log"
    early = when == "early"
    cmd = shlex.join(["tal", "extract", str(videos), "-o", str(out), *FAST])
    one = shlex.join(["tal", "extract", str(videos / "clip0.mp4"), "-o", str(tmp_path / "f"),
                      *FAST])
    auth = (f"""
        RAY_AUTH_TOKEN=not-the-token {one} --ray "127.0.0.1:$port" 2>{tmp_path}/wrong; echo $? >>{tmp_path}/wrong
        HOME=/nonexistent {one} --ray "127.0.0.1:$port" 2>{tmp_path}/missing; echo $? >>{tmp_path}/missing
        """ if early else "ray get-auth-token --generate >/dev/null 2>&1")
    setup = ("ray get-auth-token --generate >/dev/null 2>&1; export RAY_AUTH_MODE=token\n"
             if early else "")
    # late: before the worker nodes join, a cluster where no worker can ever start
    head_only = "" if early else f"{one} --ray 127.0.0.1:$port 2>{tmp_path}/nocpu; echo $? >>{tmp_path}/nocpu"
    res = _in_namespace(
        f"""
        {setup}{CLUSTER.replace("$HEAD_ONLY", head_only)}
        unset RAY_AUTH_MODE  # tal must find the cluster's mode by itself
        {auth}
        python -c {shlex.quote(WATCH)} {log} {1 if early else 2} {0.1 if early else 0.05} \\
            {0 if early else 1} &
        {cmd} --ray "127.0.0.1:$port"
        """,
        env={"TAL_WORKER_LOG": str(log)},
    )
    assert res.returncode == 1, res.stderr  # the corrupt input only
    _no_ray_noise(res)
    vid = _killed_inside(res.stderr, log, "node")
    ip = next(ln for ln in res.stderr.splitlines() if ln.startswith("killed-node ")).split()[3]
    lost = [ln for ln in res.stderr.splitlines() if "lost" in ln]
    assert lost[0] == f"tal: --ray: node {ip} lost: 1 video moved", lost
    redone = [vid] if early else [vid, _killed_inside(res.stderr, log, "worker")]
    assert (f"4 done, 0 skipped, 1 failed; {len(set(redone))} redone after a worker died "
            f"(node lost: {ip})") in res.stderr, res.stderr
    assert "worker process died" not in res.stderr
    _same_outputs(out, local_out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp or lock left
    if not early:
        *lines, rc = (tmp_path / "nocpu").read_text().splitlines()
        never = "no worker can ever start: each needs a CPU and no node of the cluster has one"
        assert rc == "1" and lines == [f"tal: error: --ray: {never} (1 node)"], lines
    if early:
        refused = "the cluster refused the token in the RAY_AUTH_TOKEN variable"
        for case, cause in (("wrong", refused),
                            ("missing", "the cluster demands a token and none was found")):
            *lines, rc = (tmp_path / case).read_text().splitlines()
            assert rc == "1" and len(lines) == 1, lines
            assert lines[0].startswith("tal: error: --ray: cannot connect to the Ray cluster at "
                                       "127.0.0.1:") and cause in lines[0], lines
            assert "not-the-token" not in lines[0]
        _nothing_made(tmp_path / "f")

def test_driver_killed_then_resume(videos, local_out, tmp_path):
    """SIGKILL the driver (on a `ray start` cluster) while its worker is inside a video, two
    done. Ray ends such a worker from C++, where no Python runs, yet its lock file goes (the
    worker's janitor); only the dead driver's own folder claim stays. The rerun (a local
    instance) redoes nothing finished and leaves nothing behind."""
    out, log = tmp_path / "feats", tmp_path / "workers.log"
    cmd = shlex.join(["tal", "extract", str(videos), "-o", str(out), *FAST, "--workers", "1",
                      "--ray"])
    res = _in_namespace(
        f"""
        {CLUSTER.split("$HEAD_ONLY")[0].replace("--num-cpus 0", "--num-cpus 1")}
        {cmd} "127.0.0.1:$port" & drv=$!
        for i in $(seq 3000); do
          if [ "$(grep -c ' done ' {log} 2>/dev/null)" -ge 2 ] && tail -1 {log} | grep -q ' clip[0-9] start '; then
            kill -9 $drv; echo "driver killed in $(tail -1 {log} | cut -d' ' -f2)" >&2; break
          fi
          sleep 0.02
        done
        wait $drv; sleep 2; exit 0
        """,
        env={"TAL_WORKER_LOG": str(log)},
    )
    killed = [ln.split()[-1] for ln in res.stderr.splitlines() if ln.startswith("driver killed")]
    assert killed, res.stderr
    assert [p.name for p in out.glob(".*.lock")] == [".tal-features.lock"], list(out.iterdir())
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert 2 <= len(done) < 4
    for name in done:  # every output present is complete: its .npy pair is there
        assert json.loads((out / name).read_text())["num_features"] > 0
        assert (out / name).with_suffix(".npy").is_file()

    res = _in_namespace(f"{cmd}")
    assert res.returncode == 1, res.stderr
    assert f"{4 - len(done)} done, {len(done)} skipped, 1 failed" in res.stderr, res.stderr
    assert {n: (out / n).stat().st_mtime_ns for n in done} == done  # untouched
    _same_outputs(out, local_out)


def test_not_a_ray_cluster_is_one_line_within_seconds(videos, tmp_path):
    """A web server, a listener that never answers, nothing at all: one line each, in seconds
    (Ray alone retries such an address for minutes)."""
    one = shlex.join(["tal", "extract", str(videos / "clip0.mp4"), "-o", str(tmp_path / "f"), *FAST])
    res = _in_namespace(
        f"""
        python -m http.server 8089 --bind 127.0.0.1 >/dev/null 2>&1 &
        python -c 'import socket, time; s = socket.socket(); s.bind(("127.0.0.1", 8090)); s.listen(); time.sleep(120)' &
        sleep 1
        for port in 8089 8090 1; do
          t0=$(date +%s.%N)
          {one} --ray 127.0.0.1:$port 2>{tmp_path}/err$port
          echo "$? $t0 $(date +%s.%N)" >{tmp_path}/rc$port
        done
        """,
        timeout=200)
    assert res.returncode == 0 and res.stdout == "", res.stderr
    for port, seen in (("8089", "a web server (HTTP/1) listens there, not Ray's GCS"), ("8090", "no answer within"),
                       ("1", "Connection refused")):
        rc, t0, t1 = (tmp_path / f"rc{port}").read_text().split()
        lines = (tmp_path / f"err{port}").read_text().splitlines()
        assert rc == "1" and float(t1) - float(t0) < 30, (port, rc, float(t1) - float(t0))
        assert len(lines) == 1 and lines[0].startswith(
            f"tal: error: --ray: nothing at 127.0.0.1:{port} answers as a Ray cluster"), lines
        assert seen in lines[0], lines
    _nothing_made(tmp_path / "f")

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
    res = _in_namespace(f"{cmd}")
    assert res.returncode == 1, res.stderr
    assert "4 done, 0 skipped, 1 failed" in res.stderr
    _no_ray_noise(res)
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")
    assert sorted(json.loads((tmp_path / "ray" / "x.json").read_text())["results"]) == [
        f"clip{k}" for k in range(4)]
