"""Fuzzer: real small mp4, mkv and webm clips, mutated by hypothesis (byte flips, truncations,
zeroed/noisy/duplicated ranges, headers spliced from another container).

For every mutant, in a worker process watched for hangs (``fuzzing.Worker``): the decoder
either gives frames that keep its invariants (112 x 112 RGB, times k / 10) or refuses the file
with a one-line cause (exit status 1 in a batch); never another exception (a traceback), never
longer than ``TIMEOUT_S``, never a dead worker. A batch of mutants through ``tal extract``
checks the rest at the command line: exit 0 or 1, no traceback, outputs for exactly the
mutants that were not refused, no temp or lock file left.

CI runs ``TAL_FUZZ_EXAMPLES`` mutants (default 60, ~10 s, derandomized: the same mutants each
run). By hand, many more, new ones each run::

    TAL_FUZZ_EXAMPLES=10000 TAL_FUZZ_RANDOM=1 python -m pytest -q tests/test_fuzz.py -k decoder -s
    TAL_FUZZ_CLI=100 TAL_FUZZ_RANDOM=1 python -m pytest -q tests/test_fuzz.py -k cli   # 300 more

(the counts and findings of such runs are in BENCHMARKS.md).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections import Counter

import pytest
from fuzzing import CUT, FLIP, SPLICE_HEAD, SPLICE_INSERT, Worker, apply, seed_clips
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tal_pipeline.inputs import video_id

EXAMPLES = int(os.environ.get("TAL_FUZZ_EXAMPLES", "60"))
CLI_EXTRA = int(os.environ.get("TAL_FUZZ_CLI", "0"))  # random mutants per container in the CLI batch
RANDOM = bool(os.environ.get("TAL_FUZZ_RANDOM"))
TIMEOUT_S = 20.0  # per mutant; a clean 1 s seed decodes in ~20 ms

_int = st.integers(0, 2**31 - 1)
_op = st.tuples(st.integers(0, SPLICE_INSERT), _int, _int, _int)
# flips are the common case; the other kinds have as many draws between them
_ops = st.lists(st.one_of(st.tuples(st.just(FLIP), _int, _int, _int), _op), min_size=1, max_size=6)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    clips = seed_clips(tmp_path_factory.mktemp("seeds"))
    return {ext: p.read_bytes() for ext, p in clips.items()}


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


@pytest.mark.timeout(max(120, int(EXAMPLES * (TIMEOUT_S / 10 + 0.5))))
def test_the_decoder_survives_mutants(seeds, worker, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mutants")
    seen: Counter = Counter()
    findings: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not RANDOM,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(ext=st.sampled_from(sorted(seeds)), ops=_ops)
    def check(ext, ops):
        path = folder / f"m.{ext}"
        path.write_bytes(apply(seeds[ext], ops, seeds))
        verdict = worker.check(path, TIMEOUT_S)
        seen[(ext, verdict["status"])] += 1
        if verdict["status"] not in ("ok", "refused"):
            findings.append(f"{ext} {ops}: {verdict['status']}: {verdict.get('detail')}")
        assert verdict["status"] in ("ok", "refused"), verdict

    try:
        check()
    finally:
        print(f"\nfuzz: {sum(seen.values())} mutants: {dict(sorted(seen.items()))}")
        for f in findings:
            print("finding:", f)
    for ext in seeds:  # every container was fuzzed, and both outcomes happen
        assert seen[(ext, "ok")] + seen[(ext, "refused")] > 0, seen
    assert sum(v for (_, s), v in seen.items() if s == "refused") > 0


def test_mutants_through_the_cli_leave_outputs_only_for_accepted_ones(seeds, worker, tmp_path):
    """A few fixed mutants of each kind in one ``tal extract`` batch."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    plans = {
        "cut": [(CUT, 900, 0, 0)],
        "flip": [(FLIP, 2000, 7, 0), (FLIP, 3001, 99, 0)],
        "head": [(SPLICE_HEAD, 0, 4000, 1)],
        "insert": [(SPLICE_INSERT, 1500, 3000, 2)],
    }
    rng = random.Random(os.environ.get("TAL_FUZZ_RANDOM") or 0)
    for k in range(CLI_EXTRA):  # by hand: random ones too
        plans[f"r{k:05d}"] = [(rng.randrange(SPLICE_INSERT + 1), *(rng.randrange(2**31) for _ in range(3)))
                              for _ in range(rng.randint(1, 4))]
    verdicts = {}
    for ext, data in seeds.items():
        for name, ops in plans.items():
            path = inputs / f"{name}_{ext}.{ext}"
            path.write_bytes(apply(data, ops, seeds))
            verdicts[path] = worker.check(path, TIMEOUT_S)["status"]
    assert set(verdicts.values()) <= {"ok", "refused"}, verdicts
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "tal_pipeline", "extract", str(inputs), "-o", str(out),
                        "--weights", "seeded", "--streams", "rgb", "--size", "32", "--chunk-frames", "16",
                        "--no-progress"], capture_output=True, text=True, timeout=300 + 10 * len(verdicts),
                       check=False)
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    made = {p.stem for p in out.glob("*.npy")} if out.exists() else set()
    failed = {ln.split(": ")[1] for ln in r.stderr.splitlines() if ln.startswith("tal: /")}
    for path, verdict in verdicts.items():
        if verdict == "refused":  # the decoder's refusal: a failure, and no output at all
            assert str(path) in failed and video_id(path) not in made, (path, r.stderr)
        else:  # decoded: features, or refused later as too short (one line, no output)
            assert (video_id(path) in made) != (str(path) in failed), (path, r.stderr)
    assert r.returncode == (1 if failed else 0)
    left = [p.name for p in out.iterdir() if p.name.startswith(".")] if out.exists() else []
    assert not left, left
    shutil.rmtree(inputs)
