#!/usr/bin/env bash
# The demo detector on held-out clips rendered other ways: N held-out videos (other footage
# than training, seed 2) as drawn ("ref": 256x192, frame rate drawn per video), the same
# videos at 24, 30, 50 and 60 fps and as low-texture scenes (defocus sigma 1.5 px, contrast
# 0.4): same scenes and timelines, so these compare with "ref" video by video. At 320x240,
# 640x480 and 1280x720 the generator draws scenes and timelines in pixels, so those sets are
# other videos of the same footage, not re-renders of "ref"; so the 1280x720 set is also
# downscaled to 640x360 and 426x240 ("d640", "d426": decoded, resized with an area filter,
# re-encoded at the same frame rate and timestamps), which compare with "r1280" video by video.
# One tal eval per set.
#
#   bash examples/eval_demo_robustness.sh        # after examples/train_demo.sh; ~1.2 h on 2 cores
set -euo pipefail
DATA=${DATA:-data/demo}/robust
MODEL=${MODEL:-weights/demo.pt}
N=${N:-10}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
gen() {  # gen NAME [camera options...]
    local name=$1; shift
    python -m tal_pipeline.demo.camera --out "$DATA/$name" --split heldout --videos "$N" --seed 2 \
        --min-duration 30 --max-duration 40 -q "$@"
}
gen ref
for f in 24 30 50 60; do gen "fps$f" --fps "$f"; done
gen r320 --width 320 --height 240
gen r640 --width 640 --height 480
gen r1280 --width 1280 --height 720
gen lowtex --contrast 0.4 --blur 1.5
downscale() {  # downscale SRC DST WIDTH HEIGHT
    python - "$@" <<'PY'
import os, shutil, sys
import av
src, dst, w, h = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
os.makedirs(dst, exist_ok=True)
shutil.copy(os.path.join(src, "annotations.json"), dst)
for name in sorted(n for n in os.listdir(src) if n.endswith(".mp4")):
    with av.open(os.path.join(src, name)) as ic, av.open(os.path.join(dst, name), "w") as oc:
        ist = ic.streams.video[0]
        ost = oc.add_stream("h264", rate=ist.average_rate)
        ost.width, ost.height, ost.pix_fmt = w, h, "yuv420p"
        ost.time_base = ost.codec_context.time_base = ist.time_base  # the source's timestamps
        for frame in ic.decode(ist):
            out = frame.reformat(width=w, height=h, format="yuv420p", interpolation="AREA")
            out.pts, out.time_base = frame.pts, frame.time_base
            oc.mux(ost.encode(out))
        oc.mux(ost.encode())
PY
}
downscale "$DATA/r1280" "$DATA/d640" 640 360
downscale "$DATA/r1280" "$DATA/d426" 426 240
for d in "$DATA"/*/; do
    name=$(basename "$d")
    tal detect "$d" --model "$MODEL" -o "$DATA/$name.json" --no-progress
    echo "== $name"
    tal eval "$DATA/$name.json" --annotations "$d/annotations.json"
done
