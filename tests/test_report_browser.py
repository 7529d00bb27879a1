"""`tal report` in a real browser: headless Chromium, driven by Playwright, opens the page from a
file:// URL, a real mouse click on a segment row or bar seeks the video, no request leaves the
machine, hostile labels run no script, and a screenshot is taken.

Playwright drives the system's Chromium (``executable_path``: no browser is downloaded). Skips,
with one reason, where Playwright or Chromium is missing or Chromium cannot start. Set
``TAL_CHROMIUM`` to pick the binary, ``TAL_SCREENSHOT_DIR`` to keep the screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image
from videogen import write_video

from tal_pipeline.report import ReportOptions, write_report

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.timeout(120)

FPS = 10
SEGMENTS = [  # (label, score, start s, end s)
    ("walk", 0.95, 0.4, 1.6),
    ('<img src=x onerror="window.__pwned=1">', 0.6, 2.5, 3.6),
    ("run", 0.8, 4.2, 5.5),
    ("idle", 0.1, 5.0, 5.9),  # below the page's opening score and the captions track's
]


def _frame(i: int) -> np.ndarray:
    """A moving bar on a colour that changes with time: the screenshot shows the seeked frame."""
    a = np.zeros((72, 96, 3), np.uint8)
    a[...] = (40 + 3 * i, 90, 200 - 3 * i)
    a[:, (2 * i) % 96 : (2 * i) % 96 + 4] = 255
    return a


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
NEEDS = "browser tests need Playwright and Chromium (pip install playwright; apt-get install chromium)"


def find_chromium() -> str | None:
    """``$TAL_CHROMIUM`` (a path or a name on ``PATH``), else the first of CHROMIUM_NAMES."""
    env = os.environ.get("TAL_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    return next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)


@pytest.fixture(scope="module")
def browser():
    """A Playwright page (1100 x 900) in headless Chromium, every request it makes recorded in
    ``page.requests``."""
    binary = find_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(f"{NEEDS}: playwright is not installed")
    if binary is None:
        pytest.skip(f"{NEEDS}: no Chromium found (or set TAL_CHROMIUM)")
    with sync_playwright() as pw:
        try:
            # --no-sandbox: root in containers and CI; the pages are our own files
            chromium = pw.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        except Exception as err:  # noqa: BLE001 - any start failure is an environment problem
            pytest.skip(f"{NEEDS}: Chromium cannot start here: {str(err).splitlines()[0]}")
        page = chromium.new_page(viewport={"width": 1100, "height": 900})
        page.set_default_timeout(30_000)  # ms
        page.requests = []
        page.on("request", lambda req: page.requests.append(req.url))
        yield page
        chromium.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    (root / "videos").mkdir()
    write_video(
        root / "videos" / "clip.webm",
        _frame,
        FPS,
        num_frames=60,
        codec="libvpx-vp9",
        options={"deadline": "realtime", "cpu-used": "8"},
    )
    res = {
        "version": "tal-pipeline/0.1",
        "results": {
            "clip": [
                {"label": lab, "score": sc, "segment": [t0, t1]} for lab, sc, t0, t1 in SEGMENTS
            ]
        },
        "external_data": {},
        "videos": {
            "clip": {
                "path": "clip.webm",
                "duration": 6.0,
                "fps": 10.0,
                "actionness": {"t0": 0.2, "step": 0.4, "values": [0.1, 0.8, 0.9, 0.2, 0.1] * 3},
            }
        },
    }
    gt = {
        "database": {
            "clip": {"duration": 6.0, "annotations": [{"label": "walk", "segment": [0.5, 1.5]}]}
        }
    }
    return write_report(
        res,
        root / "videos",
        root / "out" / "report.html",
        annotations=gt,
        options=ReportOptions(top_k=3),
    )


def _click(page: Page, selector: str) -> None:
    """A real mouse click (moved, pressed, released) at the centre of the element, scrolled
    into view; no check that nothing covers it, as a user's click does not check."""
    page.locator(selector).first.click(force=True)


def _current_time(b: Page) -> float:
    return b.evaluate("document.querySelector('video').currentTime")


def test_click_seeks_video_and_screenshot(browser, report, tmp_path):
    b = browser
    b.requests.clear()
    b.goto(report.resolve().as_uri())
    ready = b.evaluate(
        "new Promise(function(res){var v=document.querySelector('video');"
        "if(v.readyState>=1)return res(v.readyState);"
        "v.addEventListener('loadedmetadata',function(){res(v.readyState)});"
        "v.addEventListener('error',function(){res(-1)});setTimeout(function(){res(v.readyState)},10000);})"
    )
    assert ready >= 1, "Chromium could not load the VP9/WebM video from the relative path"
    assert abs(b.evaluate("document.querySelector('video').duration") - 6.0) < 0.2
    assert _current_time(b) == 0

    # the page opens at the subtitles' threshold: 'idle' (0.1) is in the page, not on show
    # (row, bar, legend); the slider brings it in and takes it out again
    from tal_pipeline.writers import SUBTITLE_MIN_SCORE

    def shown() -> list[int]:  # rows, bars, keyframes, legend entries on show
        sels = ("table.segments tbody tr", ".bar:not(.gt)", ".thumb", ".legend span")
        return [b.locator(f"{sel}:visible").count() for sel in sels]

    assert float(b.locator("#minscore").input_value()) == SUBTITLE_MIN_SCORE
    assert b.locator("table.segments tbody tr").count() == 4
    assert shown() == [3, 3, 3, 3]  # 'walk' has ground truth: in the legend at any score
    height = b.locator(".lanes").first.bounding_box()["height"]
    b.locator("#minscore").fill("0")
    assert shown() == [4, 4, 3, 4]
    assert b.locator(".lanes").first.bounding_box()["height"] > height  # 'idle' needs a lane
    b.locator("#minscore").fill(str(SUBTITLE_MIN_SCORE))
    assert shown() == [3, 3, 3, 3]

    # a real click on the second row (sorted by start: the 2.5 s segment) seeks there
    _click(b, "table.segments tbody tr:nth-child(2)")
    t = _current_time(b)
    assert 2.5 <= t < 2.5 + 0.8, t  # the player starts playing after the seek
    assert b.evaluate(
        "document.querySelector('table.segments tbody tr:nth-child(2)').classList.contains('sel')"
    )
    assert b.evaluate("document.querySelectorAll('.bar.sel').length") == 1

    # a click on the timeline bar of the 4.2 s segment seeks there
    _click(b, ".bar[data-start='4.2']")
    assert 4.2 <= _current_time(b) < 4.2 + 0.8

    # a click on a keyframe (the best segment, 0.4 s) seeks there
    b.evaluate("document.querySelector('video').pause()")
    _click(b, ".thumb[data-start='0.4']")
    assert 0.4 <= _current_time(b) < 0.4 + 0.8

    # the hostile label ran nothing; every request stayed on this machine
    assert b.evaluate("typeof window.__pwned") == "undefined"
    urls = list(b.requests)
    assert urls and all(u.startswith(("file:", "data:")) for u in urls), urls

    # screenshot after seeking back to the first row
    b.evaluate("document.querySelector('video').pause()")
    _click(b, "table.segments tbody tr:nth-child(1)")
    b.evaluate("document.querySelector('video').pause(); window.scrollTo(0, 0)")
    b.evaluate("new Promise(function(r){setTimeout(r, 400)})")
    png = tmp_path / "report.png"
    b.screenshot(path=png)
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape == (900, 1100, 3)
    assert img.std() > 10  # not a blank page
    keep = os.environ.get("TAL_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(png, Path(keep) / "report_browser.png")


def _active_cues(b: Page, t: float, expect: list[str] | None = None) -> list[str]:
    """Seek the paused player to ``t`` s; the texts (as shown: markup decoded) of the captions
    track's active cues, polled until they equal ``expect`` (cue updates follow the seek)."""
    js = """new Promise(function(res){
      var v=document.querySelector('video'), tr=v.textTracks[0], want=%s, t0=Date.now();
      function now(){return Array.from(tr.activeCues||[]).map(function(c){
        return c.getCueAsHTML().textContent;}).sort();}
      function poll(){var got=now();
        if(want===null?Date.now()-t0>300:JSON.stringify(got)===JSON.stringify(want)||Date.now()-t0>3000)
          return res(got);
        setTimeout(poll,20);}
      v.pause(); v.currentTime=%s; poll();})"""
    want = "null" if expect is None else json.dumps(sorted(expect))
    return b.evaluate(js % (want, repr(float(t)))
)


def _after_click(b: Page) -> None:
    """Wait until the seek and play() a click started are over (not seeking, playing or paused
    for 200 ms), so that a seek of ours does not race them."""
    b.evaluate(
        "new Promise(function(res){var v=document.querySelector('video'),t0=Date.now(),calm=0;"
        "(function poll(){calm=v.seeking?0:calm+1;"
        "if(calm>=10||Date.now()-t0>3000)return res(1);setTimeout(poll,20);})();})"
    )


def test_captions_track_shows_active_cue(browser, report):
    """The player's WebVTT track (a data: URI in the page) loads in Chromium's own parser, is
    shown by default, and at a known time its active cue is that segment's ``label (score)``;
    a click on a segment below the track's score shows that segment's label too."""
    from tal_pipeline.report import ReportOptions as Opts

    b = browser
    b.goto(report.resolve().as_uri())
    state = b.evaluate(
        "new Promise(function(res){var t=document.querySelector('video track');"
        "if(t.readyState===2)return res(2);t.addEventListener('load',function(){res(2)});"
        "t.addEventListener('error',function(){res(-1)});setTimeout(function(){res(t.readyState)},10000);})"
    )
    assert state == 2, "Chromium did not load the captions track"
    assert b.evaluate("document.querySelector('video').textTracks[0].mode") == "showing"
    cues = b.evaluate(
        "Array.from(document.querySelector('video').textTracks[0].cues)"
        ".map(function(c){return [c.startTime,c.endTime,c.getCueAsHTML().textContent]})"
    )
    want = [(lab, sc, t0, t1) for lab, sc, t0, t1 in SEGMENTS if sc >= Opts.cue_min_score]
    assert [c[:2] for c in cues] == [[pytest.approx(t0), pytest.approx(t1)] for *_, t0, t1 in want]
    assert [c[2] for c in cues] == [f"{lab} ({sc:.2f})" for lab, sc, *_ in want]

    assert _active_cues(b, 1.0, ["walk (0.95)"]) == ["walk (0.95)"]
    assert _active_cues(b, 2.0) == []  # between segments: nothing on the picture
    hostile = SEGMENTS[1][0]
    assert _active_cues(b, 3.0, [f"{hostile} (0.60)"]) == [f"{hostile} (0.60)"]  # shown as text
    assert b.evaluate("typeof window.__pwned") == "undefined"
    assert _active_cues(b, 5.2, ["run (0.80)"]) == ["run (0.80)"]  # 'idle' (0.1) has no cue

    # revealed by the slider, a click on the 'idle' row (4th by start) puts its label on the
    # picture as well
    b.locator("#minscore").fill("0")
    _click(b, "table.segments tbody tr:nth-child(4)")
    _after_click(b)
    assert _active_cues(b, 5.2, ["idle (0.10)", "run (0.80)"]) == ["idle (0.10)", "run (0.80)"]
    _click(b, "table.segments tbody tr:nth-child(1)")  # another click drops that cue
    _after_click(b)
    assert _active_cues(b, 5.2, ["run (0.80)"]) == ["run (0.80)"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_clip_subtitles_show_the_three_motions(browser, tmp_path):
    """The issue's goal: ``tal detect examples/camera_demo.mp4 -o out.vtt``, then the clip
    played with that track shows each motion while it happens (pan left 3-8 s, tilt up 11-15 s,
    zoom in 18-22 s) and nothing else, sampled every 0.5 s in Chromium."""
    import base64
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    clip = root / "examples" / "camera_demo.mp4"
    truth = json.loads((root / "examples" / "camera_demo.json").read_text())["database"]["camera_demo"]
    out = tmp_path / "out.vtt"
    run = subprocess.run([sys.executable, "-m", "tal_pipeline", "detect", str(clip), "-o", str(out),
                          "--no-progress"], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    vtt = out.read_text(encoding="utf-8")
    assert vtt.startswith("WEBVTT")
    src = "data:text/vtt;charset=utf-8;base64," + base64.b64encode(vtt.encode()).decode()
    page = tmp_path / "play.html"
    page.write_text(f'<video src="{clip.as_uri()}"><track kind="captions" default src="{src}"></video>')
    b = browser
    b.goto(page.as_uri())
    assert b.evaluate(
        "new Promise(function(res){var t=document.querySelector('track');if(t.readyState===2)return res(2);"
        "t.addEventListener('load',function(){res(2)});t.addEventListener('error',function(){res(-1)});"
        "setTimeout(function(){res(t.readyState)},10000);})"
) == 2
    # s: the demo detector's boundaries are within about a second of the truth (its zoom in
    # ends 0.9 s late on flow from the re-tuned TV-L1 it was not trained on; issue #12)
    margin = 1.0
    for k in range(50):
        t = 0.25 + 0.5 * k
        want = [a["label"] for a in truth["annotations"] if a["segment"][0] <= t < a["segment"][1]]
        near = any(abs(t - x) < margin for a in truth["annotations"] for x in a["segment"])
        if not near:
            shown = [c.rsplit(" (", 1)[0] for c in _active_cues(b, t)]
            assert shown == want, (t, shown)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_report_opens_on_the_three_motions(browser, tmp_path):
    """The issue's goal: ``tal detect examples/camera_demo.mp4 --report r.html -o out.json``;
    the page opens showing the three motions and nothing else (table rows, timeline bars and
    keyframes), each within a second of its true segment; the slider brings back the
    lower-scoring segments the results keep for ranked evaluation."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    clip = root / "examples" / "camera_demo.mp4"
    truth = json.loads((root / "examples" / "camera_demo.json").read_text())["database"]["camera_demo"]
    want = sorted((a["label"], *a["segment"]) for a in truth["annotations"])
    html, out = tmp_path / "r.html", tmp_path / "out.json"
    run = subprocess.run([sys.executable, "-m", "tal_pipeline", "detect", str(clip), "--report",
                          str(html), "-o", str(out), "--no-progress"],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    kept = json.loads(out.read_text())["results"]["camera_demo"]
    assert len(kept) > len(want)
    b = browser
    b.goto(html.as_uri())
    on_show = """sel => Array.from(document.querySelectorAll(sel)).filter(e => e.offsetParent)
      .map(e => [e.dataset.start, e.dataset.seg])"""
    rows = b.evaluate(on_show, "table.segments tbody tr")
    labels = b.locator("table.segments tbody tr:visible td:nth-child(2)").all_inner_texts()
    ends = b.locator("table.segments tbody tr:visible td:nth-child(4)").all_inner_texts()
    got = sorted(zip(labels, (float(r[0]) for r in rows), ends))
    assert [g[0] for g in got] == [w[0] for w in want], got
    for (_, start, end), (_, t0, t1) in zip(got, want):
        m, s = end.split(":")  # the table's clock, m:ss.s
        assert abs(start - t0) < 1.0 and abs(60 * int(m) + float(s) - t1) < 1.0, (got, want)
    assert sorted(b.locator(".legend span:visible").all_inner_texts()) == sorted(w[0] for w in want)
    segs = {r[1] for r in rows}
    assert {r[1] for r in b.evaluate(on_show, ".bar:not(.gt)")} == segs  # the same three bars
    assert {r[1] for r in b.evaluate(on_show, ".thumb")} <= segs
    b.locator("#minscore").fill("0")
    assert b.locator("table.segments tbody tr:visible").count() == len(kept)
    shot = os.environ.get("TAL_SCREENSHOT_DIR")
    if shot:
        b.locator("#minscore").fill(b.evaluate("document.querySelector('#minscore').defaultValue"))
        Path(shot).mkdir(parents=True, exist_ok=True)
        b.screenshot(path=Path(shot) / "demo_report.png")
