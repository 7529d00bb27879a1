"""`tal extract --ray` against the local path: overhead, bitwise agreement, peak memory per worker.

    python benchmarks/bench_ray.py                      # 8 clips of 20 s, 2 workers, CPU
    python benchmarks/bench_ray.py --clips 16 --seconds 60 --workers 4
    python benchmarks/bench_ray.py --address HOST:PORT --no-netns   # a real cluster (GPU: add
                                                        # --device cuda --gpus-per-worker 0.5)

In one run, on the same clips (bench_extract's textured panning clip, copied under other names):

1. ``local``: ``tal extract DIR -o A`` (the reference; torch's default threads);
2. ``ray``: ``tal extract DIR -o B --ray --workers W`` with the same threads per worker, so the
   outputs must be bitwise identical to ``local`` (checked);
3. ``local-1t`` / ``ray-1t``: both with ``--threads 1`` (one thread per worker: the setting that
   fits W workers on W cores without oversubscription);
4. ``floor``: ``tal extract`` on one corrupt file: the process builds the extractor, fails the
   file at once and exits, so its peak RSS is the local process's floor (imports and weights)
   before any video.

Each run is a fresh process (start-up included); wall time, the driver's peak RSS (read inside
the process before it shuts down, as a worker's is: see ``TAL``) and, for Ray, each worker's
peak RSS and its floor, the peak it had when its first video started (both read from
``TAL_WORKER_LOG``). Peak minus floor is what the videos themselves cost, on either side.

Ray binds to every interface, so unless ``--no-netns`` the script re-runs itself in private
network and PID namespaces with only loopback up (``unshare --net --pid``, needs root): all
traffic stays on 127.0.0.1, and every Ray process it started ends with it. It stops nothing
else: each ``--ray`` run without ``--address`` starts its own local instance, which ends with
that ``tal`` process, and ``RAY_TMPDIR`` points at the run's own folder, so no cluster that
``ray start`` made elsewhere on the machine is joined (or stopped).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import cpu_model
from bench_extract import TAL_OWN_PEAK, make_clip

# ``tal`` itself, its own peak RSS read inside the process once the command is over, before the
# interpreter shuts down (bench_extract.TAL_OWN_PEAK): with torch imported, the shutdown alone
# touches ~125 MB more, which wait4 counts on the local side and never on a worker's (read
# after each video); reading both sides inside the process compares like with like
TAL = TAL_OWN_PEAK


def run(args: list[str], env: dict | None = None, expect: int = 0) -> tuple[float, float, float, int]:
    """(wall s, peak RSS MB before shut-down, peak RSS MB with it, exit status) of a fresh
    ``tal ARGS`` process."""
    with tempfile.NamedTemporaryFile(suffix=".peak") as peak, tempfile.TemporaryFile("w+") as err:
        t = time.perf_counter()
        proc = subprocess.Popen([*TAL, *args], stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, **(env or {}), "TAL_BENCH_PEAK": peak.name})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        kib = int(Path(peak.name).read_text() or 0)
        code = os.waitstatus_to_exitcode(status)
        if code != expect:
            err.seek(0)
            print(err.read(), file=sys.stderr)
    return wall, kib / 1024, usage.ru_maxrss / 1024, code


def worker_memory(log: Path) -> dict[str, tuple[float, float]]:
    """pid -> (floor, peak) RSS MB from ``TAL_WORKER_LOG`` lines: the peak when its first video
    started (the extractor built, no video yet) and over all its videos."""
    mem: dict[str, tuple[float, float]] = {}
    for line in log.read_text().splitlines():
        pid, _, _, kib = line.split()
        mb = int(kib) / 1024
        floor, peak = mem.get(pid, (mb, 0.0))
        mem[pid] = (floor, max(peak, mb))
    return mem


def same_outputs(a: Path, b: Path) -> bool:
    if not (a.is_dir() and b.is_dir()):  # a run that failed before its first output
        return False
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--address", default=None, help="a running cluster (default: a local instance)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gpus-per-worker", type=float, default=0.0)
    ap.add_argument("--weights", default="seeded")
    ap.add_argument("--runs", default="floor,local,ray,local-1t,ray-1t",
                    help="which of floor, local, ray, local-1t, ray-1t to run (comma-separated)")
    ap.add_argument("--no-netns", action="store_true", help="do not enter a private network namespace")
    args = ap.parse_args()
    if not args.no_netns and os.environ.get("TAL_BENCH_NETNS") != "1":
        inner = " ".join(map(repr, [sys.executable, *sys.argv]))
        os.execvpe("unshare", ["unshare", "--net", "--pid", "--fork", "--mount-proc", "sh", "-c",
                               f"ip link set lo up; exec {inner}"],
                   {**os.environ, "TAL_BENCH_NETNS": "1"})

    root = Path(tempfile.mkdtemp(prefix="tal_bench_ray_"))
    if args.address is None:  # a local instance of our own: never the machine's `ray start` one
        (root / "ray").mkdir()
        os.environ["RAY_TMPDIR"] = str(root / "ray")
    clips = root / "clips"
    clips.mkdir()
    cache = Path(tempfile.gettempdir()) / "tal_bench"
    cache.mkdir(exist_ok=True)
    src = make_clip(cache / f"pan_{args.seconds:g}s.mp4", args.seconds)
    for i in range(args.clips):
        shutil.copyfile(src, clips / f"clip{i:02d}.mp4")
    opts = ["--weights", args.weights, "--device", args.device, "--no-progress"]
    ray = ["--ray", *([args.address] if args.address else []), "--workers", str(args.workers),
           "--gpus-per-worker", str(args.gpus_per_worker)]
    video_s = args.clips * args.seconds
    res: dict = {"cpu": cpu_model(), "clips": args.clips, "seconds": args.seconds,
                 "workers": args.workers, "device": args.device, "runs": {}}
    print(f"# {res['cpu']}; {args.clips} clips x {args.seconds:g} s; {args.workers} Ray workers",
          flush=True)
    wanted = set(args.runs.split(","))
    if "floor" in wanted:
        broken = root / "broken.mp4"  # not a video: the file fails as soon as it is opened
        broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
        _, rss, _, code = run(["extract", str(broken), *opts, "-o", str(root / "floor")], expect=1)
        res["local_floor_mb"] = round(rss)
        print(f"floor     the local process with the extractor built, no video: {rss:.0f} MB",
              flush=True)
    for name, extra in (("local", []), ("ray", ray), ("local-1t", ["--threads", "1"]),
                        ("ray-1t", [*ray, "--threads", "1"])):
        if name not in wanted:
            continue
        out, log = root / name, root / f"{name}.log"
        wall, rss, exit_rss, code = run(["extract", str(clips), *opts, "-o", str(out), *extra],
                                        {"TAL_WORKER_LOG": str(log)})
        row = {"wall_s": round(wall, 2), "x_realtime": round(video_s / wall, 3),
               "driver_peak_mb": round(rss), "driver_peak_with_exit_mb": round(exit_rss),
               "exit": code}
        if log.exists():
            mem = sorted(worker_memory(log).values(), key=lambda m: m[1])
            row["worker_peak_mb"] = [round(peak) for _, peak in mem]
            row["worker_floor_mb"] = [round(floor) for floor, _ in mem]
        res["runs"][name] = row
        print(f"{name:9s} {wall:7.1f} s  {video_s / wall:5.2f}x real time  driver peak {rss:6.0f} MB"
              + (f"  workers peak {row['worker_peak_mb']} MB, floor {row['worker_floor_mb']} MB"
                 if "worker_peak_mb" in row else ""),
              flush=True)
    r = res["runs"]
    for run_name, ref in (("ray", "local"), ("ray-1t", "local-1t")):  # same threads each side
        if run_name in r and ref in r:
            res[f"bitwise_{run_name}_eq_{ref}"] = same_outputs(root / run_name, root / ref)
            res[f"ratio_{run_name}_vs_{ref}"] = round(r[run_name]["wall_s"] / r[ref]["wall_s"], 3)
    print({k: v for k, v in res.items() if k.startswith(("ratio", "bitwise"))})
    print(json.dumps(res))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
