#!/usr/bin/env bash
# Score a training checkpoint as a shipping candidate (docs/training.md, "the ship rule"):
#
#   bash docs/recipes/candidate.sh WORK RUN STEP NAME [BLEND] [BASE]
#
# exports WORK/RUN's checkpoint STEP, taken BLEND (default 0.5) of the way from BASE (default
# weights/finally-small) towards it, into WORK/NAME; scores it on WORK/valcond2 into
# WORK/ev/valcond2-NAME.{csv,json}; prints the sample's DNSMOS OVRL / WB-PESQ and the paired
# differences against WORK/ev/valcond2-shipped.csv. With TEST=1 it also scores WORK/testset;
# SETS="testset" scores only that set.
#
#   bash docs/recipes/candidate.sh WORK - - shipped     scores BASE itself (the reference rows)
#
# The sets come from the recipe's data (docs/training.md items 11 and 10):
#   python -m finally_cli.training.recipes.conditions --clean WORK/offline/clean/validation \
#       --noise WORK/offline/noise --rooms WORK/offline/rooms -o WORK/valcond2 \
#       --per-condition 18 --seed 11
#   python -m finally_cli.training.recipes.conditions --clean WORK/offline/clean/test \
#       --noise WORK/offline/noise --rooms WORK/offline/rooms -o WORK/testset --per-condition 10
set -euo pipefail
WORK=$1; RUN=$2; STEP=$3; NAME=$4; BLEND=${5:-0.5}
HERE=$(cd "$(dirname "$0")" && pwd)
BASE=${6:-$HERE/../../weights/finally-small}
mkdir -p "$WORK/ev"
if [ "$RUN" = "-" ]; then
  MODEL=$BASE
else
  MODEL=$WORK/$NAME
  [ -d "$MODEL" ] || finally train export "$WORK/$RUN" --step "$STEP" --blend-from "$BASE" \
      --blend "$BLEND" -o "$MODEL"
fi
score() {  # score SET: the model on WORK/SET into WORK/ev/SET-NAME.*
  OMP_NUM_THREADS=1 finally eval --noisy "$WORK/$1/noisy" --reference "$WORK/$1/clean" \
      --manifest "$WORK/$1/manifest.csv" --model "$MODEL" --device cpu \
      --metrics dnsmos,pesq,estoi,sisdr --work-dir "$WORK/ev/work-$1-$NAME" \
      --csv "$WORK/ev/$1-$NAME.csv" --json "$WORK/ev/$1-$NAME.json" --workers 1 -q
  rm -rf "$WORK/ev/work-$1-$NAME"
  if [ "$NAME" != shipped ] && [ -f "$WORK/ev/$1-shipped.csv" ]; then
    echo "== $1: $NAME (B) against the shipped weights (A)"
    python "$HERE/paired.py" "$WORK/ev/$1-$NAME.csv" "$WORK/ev/$1-shipped.csv"
  fi
}
SETS=${SETS:-valcond2}
if [ "${TEST:-0}" = 1 ]; then SETS="$SETS testset"; fi
for set in $SETS; do score "$set"; done
OUT=$(mktemp -d)
finally enhance "$HERE/../samples/noisy.wav" -o "$OUT/enhanced.wav" --model "$MODEL" \
    --device cpu -q
python - "$OUT/enhanced.wav" "$HERE/../samples/clean.wav" <<'EOF'
import sys
from pathlib import Path
from finally_cli.evaluation.runner import score_file
row = score_file("candidate", "sample", Path(sys.argv[1]), Path(sys.argv[2]), ["dnsmos", "pesq"])
print(f"sample: OVRL {row['dnsmos_ovrl']:.3f} WB-PESQ {row['pesq']:.3f} (guard 2.29 / 1.225)")
EOF
rm -rf "$OUT"
