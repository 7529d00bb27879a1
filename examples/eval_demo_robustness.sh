#!/usr/bin/env bash
# The demo detector on held-out clips rendered other ways: N held-out videos (other footage
# than training, seed 2) as drawn ("ref": 256x192, frame rate drawn per video), the same
# videos at 24, 30, 50 and 60 fps and as low-texture scenes (defocus sigma 1.5 px, contrast
# 0.4): same scenes and timelines, so these compare with "ref" video by video. At 320x240,
# 640x480 and 1280x720 the generator draws scenes and timelines in pixels, so those sets are
# other videos of the same footage, not re-renders of "ref". One tal eval per set.
#
#   bash examples/eval_demo_robustness.sh        # after examples/train_demo.sh; ~1 h on 2 cores
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
for d in "$DATA"/*/; do
    name=$(basename "$d")
    tal detect "$d" --model "$MODEL" -o "$DATA/$name.json" --no-progress
    echo "== $name"
    tal eval "$DATA/$name.json" --annotations "$d/annotations.json"
done
