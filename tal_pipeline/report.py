"""A self-contained HTML report of detections (``tal report``, ``tal detect --report``).

One file, no network: CSS and JS are inline, thumbnails are JPEG data URIs, and each video is a
``<video>`` element pointing to the file by a path relative to the report's folder (move the
report and the videos together). Per video: the player, the timeline (detections stacked in
lanes, ground truth, actionness when the results carry it), a strip of keyframes of the top
segments and a table of segments; clicking a row, a bar or a keyframe seeks the player. The
player carries the detections as a WebVTT captions track (on by default, a ``data:`` URI, so the
page stays one file): the picture shows ``label (score)`` while a segment plays, and clicking a
segment below the track's score shows its label too. The page opens on the detections the
console summary and subtitles show (``SUBTITLE_MIN_SCORE``); a min-score slider reveals the
lower-scoring ones the results keep for ranked evaluation. With ground truth, the page also
gives per-class AP. A batch gets an index with one section each.

Every string from the inputs (labels, video ids, paths) is HTML-escaped; the page's script
reads its data from ``data-*`` attributes, never from JSON pasted into a ``<script>``.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tal_pipeline.errors import InputError
from tal_pipeline.inputs import VIDEO_EXTENSIONS
from tal_pipeline.plot import actionness_curve, assign_lanes, class_colors
from tal_pipeline.writers import SUBTITLE_MIN_SCORE

log = logging.getLogger(__name__)

LANE_PX = 14  # height of one timeline lane in the page, CSS pixels


@dataclass(frozen=True)
class ReportOptions:
    """What ``tal report`` puts in the page."""

    top_k: int = 10  # keyframe thumbnails per video, for its highest-scoring segments
    thumb_width: int = 160  # thumbnail width, pixels
    jpeg_quality: int = 70  # thumbnail JPEG quality (1-95)
    min_score: float = 0.0  # detections below this score are left out of the page
    shown_min_score: float = SUBTITLE_MIN_SCORE  # the min-score slider's start: the page opens
    #                   on the detections the console summary and subtitles show; the slider
    #                   reveals the rest (kept in the results for ranked evaluation)
    cue_min_score: float = SUBTITLE_MIN_SCORE  # the player's captions track: segments at least
    #                                            this good (clicking any other shows it too)
    max_lanes: int = 12  # timeline lanes per video; more overlapping segments share lanes
    tiou_thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)  # for per-class AP
    title: str = "tal-pipeline report"


# ---------------------------------------------------------------- inputs


def _as_results(results):
    from tal_pipeline.results import as_results

    return as_results(results)


def _as_annotations(annotations):
    from tal_pipeline.annotations import as_annotations

    return as_annotations(annotations)


def find_videos(
    video_ids: Sequence[str], videos=None, meta: Mapping | None = None, base: Path | None = None
) -> dict[str, Path | None]:
    """Match each video id to its file.

    Args:
        video_ids: the ids to look for.
        videos: a mapping id -> path; a folder (searched recursively for ``<id>.<video suffix>``);
            a single file (matches the id equal to its stem, or the only id); or None.
        meta: the results' ``videos`` metadata; its ``path`` is the fallback when it exists (a
            relative one from the current folder, else from ``base``, the results' folder).

    Returns:
        id -> existing file, or None when no file was found (the report then says so).
    """
    meta = meta or {}
    found: dict[str, Path | None] = {}
    table: dict[str, Path] = {}
    if isinstance(videos, Mapping):
        table = {str(k): Path(v) for k, v in videos.items()}
    elif videos is not None:
        root = Path(videos)
        if root.is_dir():
            for p in sorted(root.rglob("*")):
                if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file():
                    table.setdefault(p.stem, p)
        elif root.is_file():
            if root.stem in video_ids or len(video_ids) != 1:
                table[root.stem] = root
            else:
                table[video_ids[0]] = root
        else:
            raise InputError(f"{root}: no such file or folder (--videos)")
    for vid in video_ids:
        cand = table.get(vid)
        if cand is None:
            path = meta.get(vid, {}).get("path") if isinstance(meta.get(vid), Mapping) else None
            cand = Path(path) if isinstance(path, str) and path else None
            if (
                cand is not None
                and not cand.is_absolute()
                and not cand.is_file()
                and base is not None
            ):
                cand = Path(base) / cand
        found[vid] = cand if cand is not None and cand.is_file() else None
    return found


def relative_src(video: Path, out_dir: Path) -> str:
    """URL of ``video`` relative to ``out_dir`` (percent-encoded, so no scheme can sneak in)."""
    try:
        rel = os.path.relpath(Path(video).resolve(), Path(out_dir).resolve())
    except ValueError:  # another drive (Windows): an absolute file URL
        return Path(video).resolve().as_uri()
    return quote(Path(rel).as_posix(), safe="/")


def _display_path(video: Path, out_dir: Path) -> str:
    """The video's path as shown in the page: relative to the page's folder when possible."""
    try:
        return Path(os.path.relpath(Path(video).resolve(), Path(out_dir).resolve())).as_posix()
    except ValueError:
        return str(video)


def keyframes(
    path, times: Sequence[float], width: int = 160, quality: int = 70
) -> list[bytes | None]:
    """JPEG thumbnails of the frames on screen at ``times`` (seconds), decoded with PyAV.

    Visits the times in order; seeks (to the key frame before a time) only when that is likely
    cheaper than decoding on from where it is (a seek lands up to a key-frame interval early).
    Returns one JPEG (bytes, at most ``width`` pixels wide, never upscaled) per time, or None
    where nothing could be decoded.
    """
    from tal_pipeline.decode import open_video

    out: list[bytes | None] = [None] * len(times)
    try:  # the decoder's own checks: never a FIFO, never a cover picture taken for the video
        container, stream = open_video(path)
    except Exception as err:  # noqa: BLE001 - any decoder failure: no thumbnails, report goes on
        log.warning("%s: no thumbnails (%s)", path, err)
        return out
    try:
        stream.thread_type = "AUTO"
        base = stream.start_time or 0  # stream time-base units
        offset = float(base * stream.time_base)  # seconds

        def when(f) -> float:
            return (f.time if f.time is not None else 0.0) - offset

        frames = None  # decode iterator
        shown = pending = None  # frame on screen at the previous time; first frame after it
        reach = 1.0  # seconds: how far before its target a seek may land (learnt from seeks)
        prev_t = -math.inf
        for k in sorted(range(len(times)), key=lambda i: times[i]):
            t = max(0.0, float(times[k]))
            try:
                if frames is None or pending is None and shown is None or t - prev_t > reach:
                    container.seek(base + int(t / stream.time_base), stream=stream, backward=True)
                    frames = container.decode(stream)
                    shown, pending = None, next(frames, None)
                    if pending is not None:
                        reach = max(reach, t - when(pending))
                # walk forward: the last frame at or before t is on screen at t
                n = 0
                while pending is not None and when(pending) <= t + 1e-3 and n < 1000:
                    shown, pending, n = pending, next(frames, None), n + 1
                prev_t = t
                frame = shown or pending
                if frame is None:
                    continue
                img = frame.to_image()
                img.thumbnail((width, width * 4))
                buf = io.BytesIO()
                img.convert("RGB").save(buf, format="JPEG", quality=quality)
                out[k] = buf.getvalue()
            except Exception as err:  # noqa: BLE001 - a bad spot: no thumbnail there
                log.debug("%s: no keyframe at %.2f s (%s)", path, t, err)
                frames = None
    finally:
        container.close()
    return out


def _probe_duration(path: Path) -> float | None:
    try:
        from tal_pipeline.decode import probe_video

        return probe_video(path).duration
    except Exception:  # noqa: BLE001 - best effort
        return None


# ---------------------------------------------------------------- HTML

_CSS = """
:root{--fg:#1d232a;--mut:#6a737d;--line:#d8dee4;--bg:#fff;--sel:#fff3bf}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
 background:#f6f8fa;margin:0;padding:16px 24px}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:0 0 8px;word-break:break-all}
.meta{color:var(--mut);margin:0 0 10px}
.card{background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:14px 16px;margin:0 0 18px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid var(--line);white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr.seek{cursor:pointer} tbody tr.seek:hover{background:#f0f4f8}
tr.sel,.thumb.sel{background:var(--sel)!important}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;vertical-align:-1px}
.top{display:grid;grid-template-columns:minmax(280px,480px) 1fr;gap:16px;align-items:start}
@media (max-width:900px){.top{grid-template-columns:1fr}}
video{width:100%;background:#000;border-radius:6px;display:block}
.missing{background:#eee;color:var(--mut);padding:40px 12px;text-align:center;border-radius:6px}
.thumbs{display:flex;flex-wrap:wrap;gap:8px}
.thumb{width:164px;border:1px solid var(--line);border-radius:6px;padding:2px;margin:0;cursor:pointer;font-size:12px}
.thumb img{width:100%;display:block;border-radius:4px}
.thumb figcaption{padding:2px 4px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.tl{position:relative;margin:10px 0 4px;user-select:none}
.rowname{font-size:11px;color:var(--mut);margin:2px 0}
.lanes{position:relative;background:#fafbfc;border:1px solid var(--line);border-radius:3px;cursor:crosshair}
.bar{position:absolute;height:11px;border-radius:2px;min-width:2px;cursor:pointer}
.bar.gt{outline:1px solid rgba(0,0,0,.55)}
.bar.sel{outline:2px solid #000;z-index:2}
.strip{display:block;width:100%;height:36px;background:#fafbfc;border:1px solid var(--line);border-radius:3px}
.axis{position:relative;height:18px;font-size:11px;color:var(--mut)}
.axis span{position:absolute;transform:translateX(-50%);top:2px}
.axis span:first-child{transform:none}
.axis span.end{transform:translateX(-100%)}
.playhead{position:absolute;top:0;bottom:18px;width:2px;background:#e5534b;left:0;pointer-events:none;z-index:3}
.scroll{max-height:340px;overflow:auto;border:1px solid var(--line);border-radius:6px}
.scroll thead th{position:sticky;top:0;background:#f6f8fa}
.legend span{margin-right:14px;white-space:nowrap}
.hidden{display:none!important}
details{margin-top:10px} summary{cursor:pointer;color:var(--mut)}
.controls{margin:6px 0 12px}
"""

# The page's only script: seeks on clicks, moves the playhead, filters by score. It reads its
# inputs from data-* attributes (escaped), so no input string is ever parsed as code.
_JS = """
(function(){
  function fmt(t){t=Math.max(0,t);var h=Math.floor(t/3600),m=Math.floor(t%3600/60),s=(t%60).toFixed(1);
    if(s.length<4)s='0'+s;return (h?h+':'+(m<10?'0':'')+m:m)+':'+s;}
  function select(sec,id){
    sec.querySelectorAll('.sel').forEach(function(e){e.classList.remove('sel');});
    if(id===undefined)return;
    sec.querySelectorAll('[data-seg="'+id+'"]').forEach(function(e){e.classList.add('sel');});
    var row=sec.querySelector('tr[data-seg="'+id+'"]');
    if(row&&row.scrollIntoView){var box=row.closest('.scroll');
      if(box){var r=row.getBoundingClientRect(),b=box.getBoundingClientRect();
        if(r.top<b.top+24||r.bottom>b.bottom)box.scrollTop+=r.top-b.top-60;}}
  }
  function caption(v,sec,el){
    // a clicked segment the captions track leaves out (score below its threshold) gets a cue
    // of its own until the next click: what was clicked is what the picture names
    var tr=v&&v.textTracks&&v.textTracks[0];
    if(!tr||typeof VTTCue==='undefined')return;
    if(sec.cue){tr.removeCue(sec.cue);sec.cue=null;}
    if(el&&el.dataset.cue){
      sec.cue=new VTTCue(parseFloat(el.dataset.start),parseFloat(el.dataset.end),el.dataset.cue);
      tr.addCue(sec.cue);}
  }
  function seek(sec,t,id,el){
    var v=sec.querySelector('video');
    caption(v,sec,el);
    if(v){v.currentTime=t;var p=v.play();if(p&&p.catch)p.catch(function(){});}
    sec.dataset.last=String(t);
    select(sec,id);
  }
  document.querySelectorAll('section.video').forEach(function(sec){
    var dur=parseFloat(sec.dataset.duration)||1, v=sec.querySelector('video'),
        ph=sec.querySelector('.playhead'), clock=sec.querySelector('.clock');
    sec.addEventListener('click',function(ev){
      var el=ev.target.closest('[data-start]');
      if(el&&sec.contains(el)){seek(sec,parseFloat(el.dataset.start),el.dataset.seg,el);return;}
      var ln=ev.target.closest('.lanes');
      if(ln){var r=ln.getBoundingClientRect();seek(sec,dur*(ev.clientX-r.left)/r.width);}
    });
    sec.addEventListener('keydown',function(ev){
      var el=ev.target.closest('[data-start]');
      if(el&&(ev.key==='Enter'||ev.key===' ')){ev.preventDefault();seek(sec,parseFloat(el.dataset.start),el.dataset.seg,el);}
    });
    if(v)v.addEventListener('timeupdate',function(){
      if(ph)ph.style.left=(100*Math.min(v.currentTime/dur,1))+'%';
      if(clock)clock.textContent=fmt(v.currentTime);
    });
  });
  var ms=document.getElementById('minscore'), msv=document.getElementById('minscore-v');
  function filter(){
    var s=parseFloat(ms.value);msv.textContent=s.toFixed(2);
    document.querySelectorAll('[data-score]').forEach(function(e){
      e.classList.toggle('hidden',parseFloat(e.dataset.score)<s);});
    // each timeline as tall as the lanes its shown bars use (those shown first are on top)
    document.querySelectorAll('.lanes[data-lane-px]').forEach(function(ln){
      var px=parseFloat(ln.dataset.lanePx),n=1;
      ln.querySelectorAll('.bar:not(.hidden)').forEach(function(e){
        n=Math.max(n,Math.round((parseFloat(e.style.top)-2)/px)+1);});
      ln.style.height=(n*px+4)+'px';});
  }
  if(ms){ms.addEventListener('input',filter);filter();}  // the page opens at the slider's start
})();
"""


def _e(s) -> str:
    """HTML-escape any value for text or a quoted attribute."""
    return html.escape(str(s), quote=True)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _clock(t: float) -> str:
    """Seconds as ``m:ss.s`` or ``h:mm:ss.s``."""
    t = max(0.0, float(t))
    h, rem = divmod(t, 3600.0)
    m, s = divmod(rem, 60.0)
    s = math.floor(s * 10) / 10
    return f"{int(h)}:{int(m):02d}:{s:04.1f}" if h >= 1 else f"{int(m)}:{s:04.1f}"


def _num(x: float) -> str:
    """A float for a data attribute: short, exact enough (ms)."""
    return f"{float(x):.3f}".rstrip("0").rstrip(".") or "0"


def _score(x: float) -> str:
    """A score for a data attribute, exact (the shortest repr), so that the page's slider
    splits scores at a threshold as the console summary and subtitles do."""
    return repr(float(x))


def _ticks(duration: float, n: int = 10) -> list[float]:
    raw = duration / max(n, 1)
    steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200]
    step = next((s for s in steps if s >= raw), steps[-1] * math.ceil(raw / steps[-1]))
    return [k * step for k in range(int(duration // step) + 1)]


def _cue_attrs(seg, cue_min_score: float) -> str:
    """A segment the captions track leaves out: its end and cue text, for the page's script."""
    if seg.score >= cue_min_score:
        return ""
    from tal_pipeline.writers import cue_text

    return f' data-end="{_num(seg.end)}" data-cue="{_e(cue_text(seg))}"'


def _captions_track(vid: str, preds, options: ReportOptions) -> str:
    """The ``<track>`` of one player: the segments' WebVTT (as ``tal detect -o x.vtt`` writes
    it) in a ``data:`` URI, shown by default."""
    from tal_pipeline.writers import WriterOptions, render_vtt

    cues = WriterOptions(min_score=max(options.min_score, options.cue_min_score))
    vtt = render_vtt({"results": {vid: preds}}, cues)
    src = "data:text/vtt;charset=utf-8;base64," + base64.b64encode(vtt.encode("utf-8")).decode("ascii")
    return f'<track kind="captions" label="detections" srclang="en" default src="{src}">'


def _timeline_html(
    vid_idx: int, duration: float, preds, gts, curve, colors, max_lanes: int, playhead: bool = True,
    cue_min_score: float = 0.0, shown_min_score: float = 0.0,
) -> str:
    """The timeline: bars positioned in % of the duration, lanes in pixels."""
    parts = ['<div class="tl">']
    pl, npl = _detection_lanes(preds, max_lanes, shown_min_score)
    parts.append('<div class="rowname">detections (opacity = score)</div>')
    parts.append(
        f'<div class="lanes" data-lane-px="{LANE_PX}" style="height:{max(npl, 1) * LANE_PX + 4}px">'
    )
    order = sorted(range(len(preds)), key=lambda i: preds[i].score)  # high scores on top
    for i in order:
        s, lane = preds[i], pl[i]
        left = 100.0 * s.start / duration
        width = 100.0 * (s.end - s.start) / duration
        alpha = 0.25 + 0.75 * min(max(s.score, 0.0), 1.0)
        parts.append(
            f'<div class="bar" data-seg="{vid_idx}-{i}" data-start="{_num(s.start)}" '
            f'data-score="{_score(s.score)}"{_cue_attrs(s, cue_min_score)} '
            f'title="{_e(s.label)} {_clock(s.start)}–{_clock(s.end)} '
            f'({s.score:.3f})" style="left:{left:.4f}%;width:{width:.4f}%;top:{2 + lane * LANE_PX}px;'
            f'background:{colors[s.label]};opacity:{alpha:.3f}"></div>'
        )
    parts.append("</div>")
    if gts:
        gl, ngl = assign_lanes([(t0, t1) for _, t0, t1 in gts], max_lanes)
        parts.append('<div class="rowname">ground truth</div>')
        parts.append(f'<div class="lanes" style="height:{ngl * LANE_PX + 4}px">')
        for j, ((label, t0, t1), lane) in enumerate(zip(gts, gl)):
            parts.append(
                f'<div class="bar gt" data-seg="{vid_idx}-g{j}" data-start="{_num(t0)}" '
                f'title="{_e(label)} {_clock(t0)}–{_clock(t1)} (ground truth)" '
                f'style="left:{100.0 * t0 / duration:.4f}%;width:{100.0 * (t1 - t0) / duration:.4f}%;'
                f'top:{2 + lane * LANE_PX}px;background:{colors[label]}"></div>'
            )
        parts.append("</div>")
    if curve:
        times, vals = curve
        top = max(1.0, max(vals))
        pts = " ".join(
            f"{1000.0 * t / duration:.2f},{100.0 * (1 - v / top):.2f}" for t, v in zip(times, vals)
        )
        x0, x1 = 1000.0 * times[0] / duration, 1000.0 * times[-1] / duration
        parts.append('<div class="rowname">actionness</div>')
        parts.append(
            '<svg class="strip" viewBox="0 0 1000 100" preserveAspectRatio="none">'
            f'<polygon points="{x0:.2f},100 {pts} {x1:.2f},100" fill="#8a939d" fill-opacity="0.55"/>'
            "</svg>"
        )
    parts.append('<div class="axis">')
    ticks = _ticks(duration)
    for t in ticks:
        end = ' class="end"' if t > 0.93 * duration else ""
        parts.append(
            f'<span{end} style="left:{100.0 * t / duration:.4f}%">{_clock(t).removesuffix(".0")}</span>'
        )
    parts.append("</div>" + ('<div class="playhead"></div>' if playhead else "") + "</div>")
    return "".join(parts)


def _detection_lanes(preds, max_lanes: int, shown_min_score: float) -> tuple[list[int], int]:
    """Lanes of the detection bars: those the page opens on (score >= ``shown_min_score``) in
    the top lanes, those the slider reveals below them (sharing the last lane past
    ``max_lanes``), so the page opens on a compact timeline. (lane per segment, lanes used)."""
    groups = ([i for i, s in enumerate(preds) if s.score >= shown_min_score],
              [i for i, s in enumerate(preds) if s.score < shown_min_score])
    lanes, used = [0] * len(preds), 0
    for group in groups:
        got, n = assign_lanes([(preds[i].start, preds[i].end) for i in group], max_lanes - used)
        for i, lane in zip(group, got):
            lanes[i] = min(used + lane, max_lanes - 1)
        used = min(used + n, max_lanes)
    return lanes, used


def _ap_html(result) -> str:
    head = "".join(f'<th class="num">AP@{t:g}</th>' for t in result.tiou)
    cells = "".join(f'<td class="num"><b>{100 * v:.1f}</b></td>' for v in result.mAP)
    rows = [
        f'<tr><td><b>mAP</b></td>{cells}<td class="num"><b>{100 * result.average_mAP:.1f}</b></td></tr>'
    ]
    for label, aps in result.per_class.items():
        mean = sum(aps) / len(aps) if aps else 0.0
        cells = "".join(f'<td class="num">{100 * v:.1f}</td>' for v in aps)
        rows.append(f"<tr><td>{_e(label)}</td>{cells}<td class=num>{100 * mean:.1f}</td></tr>")
    return (
        '<section class="card" id="ap"><h2>Average precision (%) against the ground truth</h2>'
        f'<p class="meta">{_plural(result.num_videos, "video")}, '
        f"{_plural(result.num_ground_truth, 'ground-truth instance')}, "
        f"{result.num_predictions} detections evaluated (ActivityNet protocol).</p>"
        f'<div class="scroll"><table><thead><tr><th>class</th>{head}<th class="num">avg</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div></section>"
    )


def render_report(
    results,
    video_paths=None,
    out_dir: Path | str = ".",
    annotations=None,
    options: ReportOptions = ReportOptions(),
) -> str:
    """The report page as a string (see :func:`write_report`); ``out_dir`` is where the page
    will live (video paths are made relative to it)."""
    results = _as_results(results)
    annotations = _as_annotations(annotations)
    out_dir = Path(out_dir)
    ids = list(results.detections)  # ground-truth videos without detections: counted, not shown
    missed = [v for v in annotations.videos if v not in results.detections] if annotations else []
    src = Path(results.source)
    base = (
        None
        if results.source.startswith("<")
        else (src if results.source.endswith(os.sep) else src.parent)
    )
    files = find_videos(ids, video_paths, results.videos, base)
    per_video = {
        vid: sorted(
            (s for s in results.detections.get(vid, []) if s.score >= options.min_score),
            key=lambda s: (s.start, s.end, -s.score),
        )
        for vid in ids
    }
    gt = {
        vid: list(annotations.videos[vid].segments)
        if annotations and vid in annotations.videos
        else []
        for vid in ids
    }
    colors = class_colors(
        [s.label for v in per_video.values() for s in v] + [g[0] for v in gt.values() for g in v]
    )

    ap = None
    if annotations is not None and annotations.num_instances:
        from tal_pipeline.evaluate import evaluate

        ap = evaluate(annotations, results, options.tiou_thresholds)

    n_det = sum(len(v) for v in per_video.values())
    # a class stays in the legend while the slider shows one of its detections, or always when
    # it has ground truth: the legend's entry carries the class's best score
    best: dict[str, float] = {}
    for seg in (seg for v in per_video.values() for seg in v):
        best[seg.label] = max(best.get(seg.label, 0.0), seg.score)
    for label in {g[0] for v in gt.values() for g in v}:
        best.pop(label, None)
    legend_score = {label: f' data-score="{_score(x)}"' for label, x in best.items()}
    model = (
        results.external_data.get("model") if isinstance(results.external_data, Mapping) else None
    )
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{_e(options.title)}</title><style>{_CSS}</style></head><body>",
        f'<header class="card"><h1>{_e(options.title)}</h1>',
        f'<p class="meta">{len(ids)} video{"s" if len(ids) != 1 else ""}, {n_det} detections'
        + (f", model {_e(model)}" if model else "")
        + (f", results {_e(results.version)}" if results.version else "")
        + (
            f", source {_e(results.source)}"
            if results.source and not results.source.startswith("<")
            else ""
        )
        + "</p>",
        '<div class="legend">'
        + "".join(
            f'<span{legend_score.get(n, "")}><i class="sw" style="background:{c}"></i>{_e(n)}</span>'
            for n, c in colors.items()
        )
        + "</div>",
        (
            '<div class="controls"><label>min score <input id="minscore" type="range" min="0" '
            f'max="1" step="0.01" value="{_num(options.shown_min_score)}"> <span id="minscore-v">'
            f"{options.shown_min_score:.2f}</span></label></div>"
        ),
    ]
    if len(ids) > 1:
        head.append(
            '<details open><summary>videos</summary><div class="scroll"><table><thead><tr>'
            '<th>video</th><th class="num">duration</th><th class="num">detections</th>'
            "<th>best detection</th></tr></thead><tbody>"
        )
    sections = []
    index_rows = []
    for k, vid in enumerate(ids):
        preds, gts = per_video[vid], gt[vid]
        meta = results.videos.get(vid) if isinstance(results.videos.get(vid), Mapping) else {}
        duration = meta.get("duration")
        if not isinstance(duration, (int, float)) or duration <= 0:
            duration = (
                annotations.videos[vid].duration
                if annotations and vid in annotations.videos
                else None
            )
        if (not duration or duration <= 0) and files[vid] is not None:
            duration = _probe_duration(files[vid])
        ends = [s.end for s in preds] + [t1 for _, _, t1 in gts]
        duration = max([float(duration or 0.0), *ends, 1e-3])
        best = max(preds, key=lambda s: s.score, default=None)
        index_rows.append(
            f'<tr><td><a href="#v{k}">{_e(vid)}</a></td><td class="num">{_clock(duration)}</td>'
            f'<td class="num">{len(preds)}</td><td>'
            + (f"{_e(best.label)} ({best.score:.2f})" if best else "–")
            + "</td></tr>"
        )
        sections.append(
            _section_html(
                k,
                vid,
                duration,
                preds,
                gts,
                actionness_curve(meta),
                files[vid],
                out_dir,
                colors,
                options,
                len(ids),
            )
        )
    if len(ids) > 1:
        head.append("".join(index_rows) + "</tbody></table></div></details>")
    if ap is not None:
        thr = f"{ap.tiou[0]:g}–{ap.tiou[-1]:g}" if len(ap.tiou) > 1 else f"{ap.tiou[0]:g}"
        head.append(
            f"<p>average mAP <b>{100 * ap.average_mAP:.1f} %</b> (tIoU {thr}) against the ground "
            'truth: <a href="#ap">AP per class</a>'
            + (
                f"; {_plural(len(missed), 'ground-truth video')} without detections"
                if missed
                else ""
            )
            + "</p>"
        )
    head.append("</header>")
    tail = [_ap_html(ap) if ap is not None else "", f"<script>{_JS}</script>", "</body></html>\n"]
    return "\n".join(head + sections + tail)


def _section_html(
    k, vid, duration, preds, gts, curve, video, out_dir, colors, options, n_videos
) -> str:
    parts = [f'<section class="card video" id="v{k}" data-duration="{_num(duration)}">']
    parts.append(f"<h2>{_e(vid)}</h2>")
    where = _e(_display_path(video, out_dir)) if video is not None else "not found"
    parts.append(
        f'<p class="meta">{_clock(duration)} · {len(preds)} detections'
        + (f" · {_plural(len(gts), 'ground-truth instance')}" if gts else "")
        + f' · file: {where} · at <span class="clock">0:00.0</span></p>'
    )
    parts.append('<div class="top"><div>')
    if video is not None:
        preload = "metadata" if n_videos <= 20 else "none"
        parts.append(
            f'<video controls preload="{preload}" src="{_e(relative_src(video, out_dir))}">'
            f"{_captions_track(vid, preds, options)}</video>"
        )
    else:
        parts.append('<div class="missing">video file not found (pass --videos)</div>')
    parts.append("</div><div>")
    top = sorted(range(len(preds)), key=lambda i: -preds[i].score)[: max(0, options.top_k)]
    if top:
        jpgs = (
            keyframes(
                video,
                [0.5 * (preds[i].start + preds[i].end) for i in top],
                options.thumb_width,
                options.jpeg_quality,
            )
            if video is not None
            else [None] * len(top)
        )
        parts.append('<div class="rowname">top segments</div><div class="thumbs">')
        for i, jpg in zip(top, jpgs):
            s = preds[i]
            img = (
                f'<img alt="{_e(s.label)}" src="data:image/jpeg;base64,{base64.b64encode(jpg).decode("ascii")}">'
                if jpg
                else ""
            )
            parts.append(
                f'<figure class="thumb" tabindex="0" data-seg="{k}-{i}" data-start="{_num(s.start)}" '
                f'data-score="{_score(s.score)}"{_cue_attrs(s, options.cue_min_score)}>{img}'
                f'<figcaption><i class="sw" '
                f'style="background:{colors[s.label]}"></i>{_e(s.label)} {s.score:.2f}<br>'
                f"{_clock(s.start)}–{_clock(s.end)}</figcaption></figure>"
            )
        parts.append("</div>")
    parts.append("</div></div>")
    parts.append(
        _timeline_html(k, duration, preds, gts, curve, colors, options.max_lanes, video is not None,
                       options.cue_min_score, options.shown_min_score)
    )
    rows = "".join(
        f'<tr class="seek" tabindex="0" data-seg="{k}-{i}" data-start="{_num(s.start)}" data-score="{_score(s.score)}"'
        f"{_cue_attrs(s, options.cue_min_score)}>"
        f'<td class="num">{i + 1}</td><td><i class="sw" style="background:{colors[s.label]}"></i>'
        f'{_e(s.label)}</td><td class="num">{_clock(s.start)}</td><td class="num">{_clock(s.end)}</td>'
        f'<td class="num">{s.end - s.start:.1f}</td><td class="num">{s.score:.3f}</td></tr>'
        for i, s in enumerate(preds)
    )
    parts.append(
        '<div class="scroll"><table class="segments"><thead><tr><th class="num">#</th><th>label</th>'
        '<th class="num">start</th><th class="num">end</th><th class="num">length (s)</th>'
        f'<th class="num">score</th></tr></thead><tbody>{rows}</tbody></table></div>'
    )
    if gts:
        rows = "".join(
            f'<tr class="seek" tabindex="0" data-seg="{k}-g{j}" data-start="{_num(t0)}"><td><i class="sw" '
            f'style="background:{colors[label]}"></i>{_e(label)}</td><td class="num">{_clock(t0)}</td>'
            f'<td class="num">{_clock(t1)}</td><td class="num">{t1 - t0:.1f}</td></tr>'
            for j, (label, t0, t1) in enumerate(gts)
        )
        parts.append(
            f'<details><summary>ground truth ({len(gts)})</summary><div class="scroll"><table '
            'class="gt"><thead><tr><th>label</th><th class="num">start</th><th class="num">end</th>'
            f'<th class="num">length (s)</th></tr></thead><tbody>{rows}</tbody></table></div></details>'
        )
    parts.append("</section>")
    return "".join(parts)


def write_report(
    results,
    video_paths=None,
    out_html: Path | str = "report.html",
    annotations=None,
    options: ReportOptions = ReportOptions(),
    inputs=None,
) -> Path:
    """Write the self-contained HTML report of ``results`` through ``safety`` (atomically;
    never over a file of another kind or one of ``inputs``, a ``safety.Inputs`` of the run).

    Args:
        results: a results object (dict in the ActivityNet results schema), a ``Results``, or a
            results file or folder path.
        video_paths: video id -> file; a folder of videos (``<id>.<ext>``, recursive); one video
            file; or None (the ``path`` in the results' ``videos`` metadata, if it exists).
        out_html: the page to write; video sources are relative to its folder.
        annotations: ground truth (path, dict or ``Annotations``) to draw and score, or None.
        options: see :class:`ReportOptions`.

    Returns:
        the written path.
    """
    from tal_pipeline.safety import NO_INPUTS, REPORT_MARK, check_target, write_text

    out_html = Path(out_html)
    check_target(out_html, "report", inputs or NO_INPUTS)  # before the work of rendering
    page = render_report(results, video_paths, out_html.parent, annotations, options)
    # the mark that tells a later report (or --overwrite) this page is one it may replace
    page = page.replace('<meta charset="utf-8">', '<meta charset="utf-8">' + REPORT_MARK, 1)
    return write_text(out_html, page, "report", inputs or NO_INPUTS)
