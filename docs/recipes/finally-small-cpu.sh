#!/usr/bin/env bash
# How the shipped weights/finally-small (the predictive SpectralRestorer) are trained: 2 CPU
# cores, hours, resumed across interruptions. Re-run the script after any interruption: every
# step skips what exists and the training line resumes from the newest checkpoint.
#
#   bash docs/recipes/finally-small-cpu.sh [WORK_DIR]
#
# On a new machine without the run folder, INIT=weights/finally-small continues from the
# shipped weights instead of from scratch (a fresh run folder, same recipe).
set -euo pipefail
WORK=${1:-work}
mkdir -p "$WORK"

# 1. Data: tuxpaint descriptions + ktuberling words + Asterisk prompts + espeak-ng (split by
#    voice/language), real noise beds from Debian game/sound packages, synthetic noise, rooms.
[ -d "$WORK/offline" ] || python -m finally_cli.training.recipes.offline -o "$WORK/offline" --tts 300
DATA=(--set "data.clean=[$WORK/offline/clean/train]" --set "data.noise=[$WORK/offline/noise]"
      --set "data.rooms=[$WORK/offline/rooms]" --set "data.validation=$WORK/val")
[ -d "$WORK/val" ] || finally train prepare-val --config finally-small/stage1 \
    --set "data.clean=[$WORK/offline/clean/validation]" --set "data.noise=[$WORK/offline/noise]" \
    --set "data.rooms=[$WORK/offline/rooms]" -o "$WORK/val" --count 32

# 2. Stage 1: the compressed-spectrum regression (finally-small/stage1.yaml), one torch thread
#    (the GRU's small matmuls run slower on two threads than on one), two data workers.
INIT_ARGS=()
if [ -n "${INIT:-}" ]; then INIT_ARGS=(--set "init_from=$INIT"); fi
RESUME=()
if [ -d "$WORK/s1/checkpoints" ]; then RESUME=(--resume); fi
OMP_NUM_THREADS=1 finally train --config finally-small/stage1 "${DATA[@]}" "${INIT_ARGS[@]}" \
    --set checkpoint_every=200 --set validate_every=500 --set validation_files=32 \
    --set validation_dnsmos=true --set log_every=50 --set keep_checkpoints=2 \
    --run-dir "$WORK/s1" "${RESUME[@]}"
finally train export "$WORK/s1" --best -o "$WORK/finally-small"
