"""`tal extract --ray` against the local path: overhead, bitwise agreement, peak memory per worker.

    python benchmarks/bench_ray.py                      # 8 clips of 20 s, 2 workers, CPU
    python benchmarks/bench_ray.py --clips 16 --seconds 60 --workers 4
    python benchmarks/bench_ray.py --address HOST:PORT --no-netns   # a real cluster (GPU: add
                                                        # --device cuda --gpus-per-worker 0.5)
    python benchmarks/bench_ray.py --lose-node early,late   # a node lost mid-video (6 x 4 s)

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

``--lose-node`` instead: a ``ray start`` head (the driver's node) and a second node on
127.0.0.2, one CPU and one worker each, ``--threads 1``, in namespaces of their own per run.
First the local reference (one process), then a run without loss, then one run per kill:
``early`` 30 % into the second node's first video, ``late`` 70 % into the first video it starts
once a third of the videos have started (``--kill raylet``: its raylet SIGKILLed alone, its
worker then ends itself within a second; ``--kill machine``: the raylet and every process it
started at once). Per run: wall time, exit status, outputs bitwise equal to the local run's
(and no file left beside them); per kill: the lost node's work in flight (the seconds its
started, unfinished videos had run), the detection delay (kill to our ``node ... lost`` line),
and the added time: the last video's end minus a reference pool that wastes nothing, where the
node leaves at the kill with nothing in flight (its started videos queued again, whole) and
each survivor works through the queue from the moment it is free without a gap, at the pace its
videos had after the kill (``loss_figures``). Added <= in flight is the goal (with the
detection delay stated apart: it adds to the wall only where the survivors run out of work
before the loss is seen). Only the processes of the run's namespace are stopped.

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
import shlex
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
        pid, _, _, kib = line.split()[:4]
        mb = int(kib) / 1024
        floor, peak = mem.get(pid, (mb, 0.0))
        mem[pid] = (floor, max(peak, mb))
    return mem


def differences(a: Path, b: Path) -> list[str]:
    """The names of the files that are in one folder only or differ between them."""
    if not (a.is_dir() and b.is_dir()):
        return ["(no folder)"]
    na, nb = {p.name for p in a.iterdir()}, {p.name for p in b.iterdir()}
    return sorted((na ^ nb) | {n for n in na & nb if not filecmp.cmp(a / n, b / n, shallow=False)})


def same_outputs(a: Path, b: Path) -> bool:
    if not (a.is_dir() and b.is_dir()):  # a run that failed before its first output
        return False
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


# -- --lose-node: a worker node lost mid-video (issue #29's goal: no video lost, and the wall
# time grows by at most the lost node's work in flight)

# One run in its own network and PID namespaces (every Ray process ends with its shell): a head
# (the driver's node, 1 CPU) and a second node on 127.0.0.2 (1 CPU), one worker each; the
# watcher below, then `tal extract` with its stderr lines stamped with the time they came.
LOSE_RUN = """
set -u
ip link set lo up
port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ray start --head --port "$port" --num-cpus 1 --disable-usage-stats --include-dashboard=false \\
    >/dev/null 2>&1 || {{ echo "ray start failed" >&2; exit 99; }}
ray start --address "127.0.0.1:$port" --node-ip-address 127.0.0.2 --num-cpus 1 \\
    --disable-usage-stats >/dev/null 2>&1 || {{ echo "the second node failed" >&2; exit 98; }}
python -c {watch} {log} {plan} &
t0=$(date +%s.%N)
{tal} --ray "127.0.0.1:$port" 2>&1 >/dev/null | python -uc {stamp} >{err}
echo "$t0 $(date +%s.%N) ${{PIPESTATUS[0]}}" >{times}
touch {stop}
wait
"""
STAMP = "import sys, time\nfor ln in sys.stdin: print(f'{time.time():.3f} {ln}', end='')"

# Watches TAL_WORKER_LOG (`<pid> <id> <event> <peak KiB> <unix time>`), maps each worker to its
# node (its parent raylet's --node_ip_address) and, if the plan says `kill`, kills the second
# node `frac` into the first video a worker starts there after `after` starts in all (by the
# log's own clock; the next one if that video ended first), a video taken to last as long as
# the node's last one did (`tau` before it finished any: the run without loss's). `what`: "raylet" SIGKILLs the raylet alone (its
# workers see it gone and exit by themselves), "machine" the raylet and every process it
# started at the same instant. Writes {"nodes": {pid: ip}, "kill": unix time, "lost": [pids]}.
LOSE_WATCH = r'''
import json, os, sys, time
log, plan = sys.argv[1], json.loads(sys.argv[2])
def procs():
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out[int(pid)] = (ppid, args)
    return out
def raylets():
    found = {}
    for pid, (_, args) in procs().items():
        if args[0].endswith(b"raylet/raylet"):
            ip = [a.split(b"=", 1)[1].decode() for a in args if a.startswith(b"--node_ip_address=")]
            found[pid] = ip[0] if ip else "?"
    return found
def events():
    try:
        return [ln.split() for ln in open(log).read().splitlines()]
    except OSError:
        return []
rays, nodes, res, t_end = raylets(), {}, {"nodes": {}, "kill": None, "lost": []}, time.time() + 600
while time.time() < t_end and not os.path.exists(plan["stop"]):
    ev, ps = events(), procs()
    for p, v, e, _, t in ev:
        if p not in nodes and int(p) in ps:
            nodes[p] = rays.get(ps[int(p)][0], "?")
    res["nodes"] = nodes
    ended = {(p, v) for p, v, e, _, t in ev if e != "start"}
    starts = [(p, v, float(t)) for p, v, e, _, t in ev if e == "start"]
    there = [x for x in starts[plan.get("after", 0):] if nodes.get(x[0]) == plan["ip"]]
    if plan["kill"] and there:
        running = [x for x in there if x[:2] not in ended]
        if running:
            p, v, t = running[0]
            took = [float(e[4]) - s for q, w, s in there for e in ev
                    if e[:2] == [q, w] and e[2] == "done"]  # its videos' seconds so far
            time.sleep(max(0.0, t + plan["frac"] * (took[-1] if took else plan["tau"]) - time.time()))
            if (p, v) not in {(q, w) for q, w, e, _, s in events() if e != "start"}:
                target = [r for r, ip in rays.items() if ip == plan["ip"]][0]
                ps = procs()
                doomed = [q for q, (pp, _) in ps.items() if pp == target]
                res["lost"] = [str(q) for q in doomed]
                for q in [target, *(doomed if plan["what"] == "machine" else [])]:
                    os.kill(q, 9)
                res["kill"], res["video"] = time.time(), v
                plan["kill"] = False
    time.sleep(0.02)
    json.dump(res, open(plan["out"], "w"))
'''


def lose_node_run(root: Path, name: str, clips: Path, opts: list[str], plan: dict) -> dict:
    """One run of LOSE_RUN; what it left: the worker log, the watcher's record, the stamped
    stderr, (t0, t1, exit status) and the output folder."""
    d = root / name
    d.mkdir()
    files = {k: d / k for k in ("workers.log", "watch.json", "stderr", "times", "stop")}
    plan = {**plan, "out": str(files["watch.json"]), "stop": str(files["stop"])}
    tal = [*TAL, "extract", str(clips), "-o", str(d / "out"), *opts]
    script = LOSE_RUN.format(watch=shlex.quote(LOSE_WATCH), log=files["workers.log"],
                             plan=shlex.quote(json.dumps(plan)), tal=shlex.join(tal),
                             stamp=shlex.quote(STAMP), err=files["stderr"], times=files["times"],
                             stop=files["stop"])
    env = {**os.environ, "TAL_WORKER_LOG": str(files["workers.log"]), "RAY_TMPDIR": str(d),
           "TAL_BENCH_PEAK": str(d / "peak"),
           "HOME": str(d), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        env.pop(var, None)
    proc = subprocess.run(["unshare", "--net", "--pid", "--fork", "--mount-proc", "bash", "-c",
                           script], check=False, env=env, capture_output=True, text=True,
                          timeout=900)
    if not (files["times"].exists() and files["watch.json"].exists()):
        sys.exit(f"bench_ray: the {name} run did not run: {proc.stderr.strip()[-500:]}")
    t0, t1, code = files["times"].read_text().split()
    events = [ln.split() for ln in files["workers.log"].read_text().splitlines()]
    return {"t0": float(t0), "t1": float(t1), "exit": int(code), "out": d / "out",
            "watch": json.loads(files["watch.json"].read_text()),
            "events": [(p, v, e, float(t)) for p, v, e, _, t in events],
            "stderr": [(float(ln.split(" ", 1)[0]), ln.split(" ", 1)[1])
                       for ln in files["stderr"].read_text().splitlines()]}


def durations(run: dict) -> dict[str, list[float]]:
    """node ip -> the start-to-end seconds of each video its workers did."""
    starts, out = {}, {}
    for p, v, e, t in run["events"]:
        if e == "start":
            starts[(p, v)] = t
        elif e == "done" and (p, v) in starts:
            out.setdefault(run["watch"]["nodes"].get(p, "?"), []).append(t - starts.pop((p, v)))
    return out


def loss_figures(run: dict, n_videos: int) -> dict:
    """What a loss cost, on the log's clock. The reference is a pool that wastes nothing: the
    node leaves at the kill with nothing in flight (what it had started goes back to the queue
    whole), each survivor goes on from the moment it is free (its video in flight at the kill
    done, or its set-up over: its first start) through the queue without a gap, at the pace its
    videos had after the kill (the same load: on one machine the survivors speed up once the
    lost node's processes stop competing for the cores). ``added`` is the last video's end
    minus that reference's (shared out evenly over several survivors)."""
    t_kill, lost = run["watch"]["kill"], set(run["watch"]["lost"])
    ev = run["events"]
    ends = {(p, v): t for p, v, e, t in ev if e != "start"}
    starts = [(p, v, t) for p, v, e, t in ev if e == "start"]
    lost_flying = [(p, v, t) for p, v, t in starts
                   if p in lost and t <= t_kill and ends.get((p, v), t_kill + 1) > t_kill]
    in_flight = sum(t_kill - t for _, _, t in lost_flying)
    survivors = {p for p, _, _ in starts if p not in lost}
    free_at, finished = {}, set()
    for p, v, t in starts:
        if p in lost or (t > t_kill and p in free_at):
            continue
        if t > t_kill:  # its first video after the kill: set up only then
            free_at[p] = t
        elif ends.get((p, v), 0.0) <= t_kill:
            finished.add(v)
        else:  # in flight at the kill: free when it ends
            free_at[p] = ends[(p, v)]
            finished.add(v)
    for p in survivors - set(free_at):
        free_at[p] = t_kill
    finished |= {v for p, v, t in starts if p in lost and ends.get((p, v), t_kill + 1) <= t_kill}
    queued = n_videos - len(finished)  # at the kill: not started, or started on the lost node
    done = {(p, v) for p, v, e, _ in ev if e == "done"}
    tau = [ends[(p, v)] - t for p, v, t in starts if p not in lost and t > t_kill and (p, v) in done]
    tau_s = sum(tau) / len(tau) if tau else float("nan")
    n = max(len(survivors), 1)
    ideal_last = (sum(free_at.values()) + queued * tau_s) / n
    last_done = max(t for p, v, e, t in ev if e in ("done", "skipped"))
    added = last_done - ideal_last
    lost_line = [t for t, ln in run["stderr"] if " lost: " in ln]
    detect = (lost_line[0] - t_kill) if lost_line else float("nan")
    return {"kill_at_s": round(t_kill - run["t0"], 2), "video": run["watch"].get("video"),
            "in_flight_s": round(in_flight, 2), "detection_s": round(detect, 2),
            "survivors": len(survivors), "queued_at_kill": queued,
            "survivor_s_per_video": round(tau_s, 2),
            "kill_to_last_done_s": round(last_done - t_kill, 2),
            "reference_s": round(ideal_last - t_kill, 2), "added_s": round(added, 2),
            "added_le_in_flight": added <= in_flight,
            "added_le_in_flight_plus_detection": added <= in_flight + detect}


def lose_node(args, root: Path, clips: Path, opts: list[str]) -> dict:
    """The --lose-node mode: a local reference, a run without loss, then one per kill."""
    base = [*opts, "--threads", "1"]
    ref = root / "local"
    wall, _, _, _ = run(["extract", str(clips), *base, "-o", str(ref)])
    print(f"local     {wall:7.1f} s  (1 worker, --threads 1: the bitwise reference)", flush=True)
    ray_opts = [*base, "--workers", "2"]
    res: dict = {"local_wall_s": round(wall, 2), "runs": {}}
    plain = lose_node_run(root, "no-loss", clips, ray_opts, {"ip": "127.0.0.2", "kill": False})
    tau2 = durations(plain).get("127.0.0.2", [])
    tau = sum(tau2) / len(tau2) if tau2 else 5.0
    # early: 30 % into the first video of the second node; late: 70 % into the first it starts
    # once a third of the videos have started (later, it may get no other)
    kills = {"early": (0, 0.3), "late": (max(args.clips // 3, 1), 0.7)}
    runs = {"no-loss": plain}
    for i, when in enumerate(args.lose_node.split(",")):
        after, frac = kills[when]
        name = when if when not in runs else f"{when}-{i + 1}"  # a kill asked for again
        runs[name] = lose_node_run(root, name, clips, ray_opts,
                                   {"ip": "127.0.0.2", "kill": True, "after": after,
                                    "frac": frac, "tau": tau, "what": args.kill})
    for name, r in runs.items():
        row = {"wall_s": round(r["t1"] - r["t0"], 2), "exit": r["exit"],
               "bitwise_eq_local": same_outputs(r["out"], ref), "differ": differences(r["out"], ref),
               "lines": [ln for _, ln in r["stderr"]][-3:]}
        if name == "no-loss":
            row["s_per_video"] = {ip: round(sum(d) / len(d), 2) for ip, d in durations(r).items()}
        elif r["watch"]["kill"] is None:
            row["error"] = "the kill never landed inside a video"
        else:
            row.update(loss_figures(r, args.clips))
        res["runs"][name] = row
        print(f"{name:8s} {json.dumps(row)}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=None, help="default 8 (--lose-node: 6)")
    ap.add_argument("--seconds", type=float, default=None, help="default 20 (--lose-node: 4)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--address", default=None, help="a running cluster (default: a local instance)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gpus-per-worker", type=float, default=0.0)
    ap.add_argument("--weights", default="seeded")
    ap.add_argument("--runs", default="floor,local,ray,local-1t,ray-1t",
                    help="which of floor, local, ray, local-1t, ray-1t to run (comma-separated)")
    ap.add_argument("--no-netns", action="store_true", help="do not enter a private network namespace")
    ap.add_argument("--lose-node", default=None, metavar="early,late",
                    help="instead of the runs above: a head and a second node, the second lost "
                         "while its worker is inside a video (early, late or both)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (clips, outputs, logs)")
    ap.add_argument("--kill", choices=("raylet", "machine"), default="raylet",
                    help="--lose-node: SIGKILL the node's raylet alone, or with its workers")
    args = ap.parse_args()
    if args.clips is None:
        args.clips = 6 if args.lose_node else 8
    if args.seconds is None:
        args.seconds = 4.0 if args.lose_node else 20.0
    if args.lose_node and (args.no_netns or args.address):
        ap.error("--lose-node starts its own cluster in its own namespaces")
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
    if args.lose_node:
        res.update(lose_node(args, root, clips, opts))
        res["load_avg"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(res, default=str))
        if args.keep:
            print(f"# kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
        return
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
