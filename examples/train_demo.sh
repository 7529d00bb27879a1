#!/usr/bin/env bash
# Regenerates the camera-motion data set and retrains the demo detector (weights/demo.pt).
#
#   bash examples/train_demo.sh              # needs: pip install -e '.[camera]'
#   DATA=/tmp/demo N_TRAIN=32 bash examples/train_demo.sh   # fewer training videos
#
# 1. generate videos from real footage through a virtual camera (train sources / held-out sources)
# 2. extract flow-stream features with the seeded r3d_18 (no download; see weights/README.md for
#    why the demo uses the flow stream only)
# 3. train the TSA/TPP head, 4. detect on the held-out split, 5. evaluate.
set -euo pipefail
DATA=${DATA:-data/demo}
N_TRAIN=${N_TRAIN:-48}       # training videos used (of the 48 generated)
N_HELDOUT=${N_HELDOUT:-16}   # held-out videos used (of the 16 generated)
OUT=${OUT:-weights/demo.pt}
EXTRA_TRAIN_ARGS=${EXTRA_TRAIN_ARGS:---epochs 60}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # the shipped model was trained with one thread

python -m tal_pipeline.demo.camera --out "$DATA/train" --split train --videos 48 --seed 0 \
    --min-duration 30 --max-duration 60 --jobs 2
python -m tal_pipeline.demo.camera --out "$DATA/heldout" --split heldout --videos 16 --seed 1 \
    --min-duration 30 --max-duration 60 --jobs 2

ls "$DATA"/train/*.mp4 | sort | head -n "$N_TRAIN" > "$DATA/train.txt"
ls "$DATA"/heldout/*.mp4 | sort | head -n "$N_HELDOUT" > "$DATA/heldout.txt"
tal extract "$DATA/train.txt" -o "$DATA/feat_train" --weights seeded --streams flow --flow torch
tal extract "$DATA/heldout.txt" -o "$DATA/feat_heldout" --weights seeded --streams flow --flow torch

# the held-out ground truth of the videos used
python - "$DATA" <<'PY'
import json, pathlib, sys
data = pathlib.Path(sys.argv[1])
ann = json.loads((data / "heldout/annotations.json").read_text())
used = {pathlib.Path(p).stem for p in (data / "heldout.txt").read_text().split()}
ann["database"] = {k: v for k, v in ann["database"].items() if k in used}
(data / "heldout_used.json").write_text(json.dumps(ann))
PY

# shellcheck disable=SC2086
tal train "$DATA/feat_train" --annotations "$DATA/train/annotations.json" -o "$OUT" --seed 0 --val-subset none $EXTRA_TRAIN_ARGS
tal detect "$DATA/feat_heldout" --features --model "$OUT" -o "$DATA/heldout_pred.json"
tal eval "$DATA/heldout_pred.json" --annotations "$DATA/heldout_used.json"
sha256sum "$OUT"
