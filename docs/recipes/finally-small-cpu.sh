#!/usr/bin/env bash
# How the shipped weights/finally-small (the predictive SpectralRestorer) are trained: 2 CPU
# cores, hours, resumed across interruptions. Re-run the script after any interruption: every
# step skips what exists and the training line resumes from the newest checkpoint.
#
#   bash docs/recipes/finally-small-cpu.sh [WORK_DIR]
#
# On a new machine without the run folder, INIT=weights/finally-small continues from the
# shipped weights instead of from scratch (a fresh run folder, same recipe).
#
# The sources are Debian packages (the recipe links or decodes their files; a missing one is
# skipped and counted as 0 in the data set's README.md). On a fresh Debian/Ubuntu machine:
#
#   apt-get install --no-install-recommends tuxpaint-stamps-default ktuberling-data \
#     asterisk-core-sounds-{en,es,fr,it,ru}-g722 asterisk-moh-opsound-g722 espeak-ng ffmpeg \
#     flightgear-data-base megaglest-data hedgewars-data colobot-common-sounds lincity-ng-data \
#     freedroidrpg-data extremetuxracer-data boswars-data bucklespring-data redeclipse-data \
#     torcs-data
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

# 2. Stage 1 (finally-small/stage1.yaml), one torch thread (the GRU's small matmuls run slower
#    on two threads than on one), data workers on the other core. Four phases, as the shipped
#    0.6 weights were trained (docs/training.md):
#    a. 5 000 steps of a broad mix (8 % clean, SNR -5..35 dB, room 0.35, mic EQ 0.3, codecs 0.5;
#       AdamW 1e-3);
#    b. from there, 1 000 steps of the noise-centred mix of stage1.yaml (these were 0.4);
#    c. from there, 1 000 steps of the same mix with the clean files whose noise floor is above
#       -32 dB left out (data.max_floor_db), a complex share of 0.1 in the spectral loss and
#       AdamW 5e-4 falling by 0.9 every 500 steps (these were 0.5);
#    d. from there, the deep filter grown from 3 to 5 kHz, 1 000 steps of c (these were 0.6);
#    e. teacher targets for half the items, 500 steps, blended half-way back (these were 0.7);
#    f. clean targets high-passed at 50 Hz, teacher targets for a quarter of the items, 500
#       steps, blended half-way back (these were 0.8);
#    g. every voice, with hiss-free targets (recipes.quieten) and the mean of two teachers,
#       500 steps at 2e-4, blended half-way back (these were 0.9);
#    h. one more (residual) GRU layer and synthetic steady noise, 500 steps at 3e-4 from g,
#       blended half-way back, the mix-back stage on (these were 0.10);
#    i. teacher targets for half the items, 250 steps from h, blended half-way back (0.11);
#    j. geometric teacher targets, a backward GRU and L1 spectral errors, 1 750 steps from i,
#       blended half-way back (0.12);
#    k. a bin refiner, 1 500 steps of j's recipe from j, blended half-way back (0.14);
#    l. k's recipe with a second, low-SNR teacher pool, 500 steps in each of two data seeds,
#       the two runs averaged and blended half-way back towards k (0.15).
#    INIT=weights/finally-small skips a-c and continues from the shipped weights with d-m.
#    Since session 14 the microphone EQ of the mix has zero phase (docs/training.md item 16),
#    and since session 15 stage1.yaml high-passes the clean speech at 50 Hz before use
#    (data.clean_highpass_hz, item 17), so a rebuild from a differs from the shipped weights,
#    which learnt the old EQ and the clean files' rumble.
INIT_ARGS=()
if [ -n "${INIT:-}" ]; then INIT_ARGS=(--set "init_from=$INIT"); fi
COMMON=(--set checkpoint_every=200 --set validate_every=500 --set validation_files=32
        --set validation_dnsmos=true --set log_every=50 --set keep_checkpoints=2)
PHASE_C=(--set steps=1000 --set data.max_floor_db=-32 --set loss.spectral_complex=0.1
         --set optim.lr=5e-4 --set optim.gamma=0.9 --set optim.decay_every=500)
if [ -z "${INIT:-}" ]; then
  RESUME=()
  if [ -d "$WORK/s1/checkpoints" ]; then RESUME=(--resume); fi
  if [ ! -d "$WORK/s1/checkpoints/step_00005000" ]; then
    OMP_NUM_THREADS=1 finally train --config finally-small/stage1 "${DATA[@]}" "${COMMON[@]}" \
        --set steps=5000 --set optim.lr=1e-3 --set degradation.p_clean=0.08 \
        --set "degradation.snr_db=[-5.0,35.0]" --set degradation.p_room=0.35 \
        --set degradation.p_mic=0.3 --set degradation.p_codec=0.5 \
        --run-dir "$WORK/s1" "${RESUME[@]}"
  fi
  RESUME=()
  if [ -d "$WORK/s2/checkpoints" ]; then RESUME=(--resume); fi
  if [ ! -d "$WORK/s2/checkpoints/step_00001000" ]; then
    OMP_NUM_THREADS=1 finally train --config finally-small/stage1 "${DATA[@]}" "${COMMON[@]}" \
        --set "init_from=$WORK/s1" --set steps=1000 --run-dir "$WORK/s2" "${RESUME[@]}"
  fi
  RESUME=()
  if [ -d "$WORK/s3/checkpoints" ]; then RESUME=(--resume); fi
  if [ ! -d "$WORK/s3/checkpoints/step_00001000" ]; then
    OMP_NUM_THREADS=1 finally train --config finally-small/stage1 "${DATA[@]}" "${COMMON[@]}" \
        --set "init_from=$WORK/s2" "${PHASE_C[@]}" --run-dir "$WORK/s3" "${RESUME[@]}"
  fi
  INIT_ARGS=(--set "init_from=$WORK/s3")
fi
# d. Deep filtering up to 5 kHz: the model grown from 96 to 160 filtered bins (it starts from
#    exactly its previous output, the new bins as identity filters), 1 000 steps of c's recipe.
printf 'spectral_restorer:\n  df_bins: 160\n' > "$WORK/df160.yaml"
RESUME=()
if [ -d "$WORK/s4/checkpoints" ]; then RESUME=(--resume); fi
OMP_NUM_THREADS=1 finally train --config finally-small/stage1 "${DATA[@]}" "${INIT_ARGS[@]}" \
    "${COMMON[@]}" "${PHASE_C[@]}" --set "overlays=[$WORK/df160.yaml]" --set steps=1000 \
    --run-dir "$WORK/s4" "${RESUME[@]}"
finally train export "$WORK/s4" -o "$WORK/s4-model"
# e. Teacher targets for half the items (these were 0.7): a pool of 3 000 noise-only pairs from
#    the training voices, DeepFilterNet3's output on each as its target (recipes.teacher; needs
#    the `peers` extra), 500 steps of d's recipe from d with data.p_pairs=0.5, then the
#    weights taken half-way back towards d's (export --blend-from; docs/training.md item 15).
NOISE_ONLY=(--set data.max_floor_db=-32 --set degradation.p_clean=0 --set degradation.p_noise=1
            --set degradation.p_room=0 --set degradation.p_mic=0 --set degradation.p_codec=0
            --set degradation.p_bandlimit=0 --set degradation.p_clip=0)
[ -f "$WORK/pool/manifest.csv" ] || finally train prepare-val --config finally-small/stage1 \
    "${DATA[@]}" "${NOISE_ONLY[@]}" -o "$WORK/pool" --count 3000 --seed 77
[ -f "$WORK/pool-dfn3/manifest.csv" ] || python -m finally_cli.training.recipes.teacher \
    "$WORK/pool" -o "$WORK/pool-dfn3" --teacher deepfilternet3
RESUME=()
if [ -d "$WORK/s5/checkpoints" ]; then RESUME=(--resume); fi
OMP_NUM_THREADS=1 finally train --config finally-small/stage1 "${DATA[@]}" \
    --set "init_from=$WORK/s4-model" "${COMMON[@]}" "${PHASE_C[@]}" \
    --set "data.pairs=$WORK/pool-dfn3" --set data.p_pairs=0.5 --set steps=500 \
    --run-dir "$WORK/s5" "${RESUME[@]}"
finally train export "$WORK/s5" --step 500 --blend-from "$WORK/s4-model" --blend 0.5 \
    -o "$WORK/s5-model"
# f. Rumble-free clean targets (stage1.yaml's data.clean_highpass_hz, since session 15) and the
#    zero-phase microphone EQ, teacher targets for a quarter of the items, 500 steps of d's
#    recipe from e, then half-way back towards e (these were 0.8; docs/training.md item 17).
RESUME=()
if [ -d "$WORK/s6/checkpoints" ]; then RESUME=(--resume); fi
OMP_NUM_THREADS=1 finally train --config finally-small/stage1 "${DATA[@]}" \
    --set "init_from=$WORK/s5-model" "${COMMON[@]}" "${PHASE_C[@]}" \
    --set "data.pairs=$WORK/pool-dfn3" --set data.p_pairs=0.25 --set steps=500 \
    --run-dir "$WORK/s6" "${RESUME[@]}"
finally train export "$WORK/s6" --step 500 --blend-from "$WORK/s5-model" --blend 0.5 \
    -o "$WORK/s6-model"
# g. Hiss-free targets (these were 0.9; docs/training.md item 18): every voice again (no floor
#    filter), the input degraded from the original recording and the target read from its
#    quietened copy (data.targets), so a recording's own hiss is noise to remove; teacher
#    targets for a quarter of the items from the mean of DeepFilterNet3's and DTLN's outputs;
#    500 steps at 2e-4 from f, then half-way back towards f.
[ -d "$WORK/clean-quiet" ] || python -m finally_cli.training.recipes.quieten \
    "$WORK/offline/clean/train" "$WORK/clean-quiet"
[ -f "$WORK/pool-avg/manifest.csv" ] || python -m finally_cli.training.recipes.teacher \
    "$WORK/pool" -o "$WORK/pool-avg" --teacher deepfilternet3 --teacher dtln
RESUME=()
if [ -d "$WORK/s7/checkpoints" ]; then RESUME=(--resume); fi
OMP_NUM_THREADS=1 finally train --config finally-small/stage1 "${DATA[@]}" \
    --set "init_from=$WORK/s6-model" "${COMMON[@]}" "${PHASE_C[@]}" \
    --set "data.pairs=$WORK/pool-avg" --set data.p_pairs=0.25 \
    --set "data.targets=$WORK/clean-quiet" --set data.max_floor_db=0 --set optim.lr=2e-4 \
    --set steps=500 --run-dir "$WORK/s7" "${RESUME[@]}"
finally train export "$WORK/s7" --step 500 --blend-from "$WORK/s6-model" --blend 0.5 \
    -o "$WORK/s7-model"
# h. One more GRU layer (residual, its projection at zero: the grown model starts from exactly
#    g's output; docs/training.md item 21), synthetic steady noise in a fifth of the items,
#    500 steps of g's recipe at 3e-4 from g, then half-way back towards g, written with the
#    mix-back inference stage on (these were 0.10).
printf 'spectral_restorer:\n  residual_gru_layers: 1\n' > "$WORK/grow1.yaml"
RESUME=()
if [ -d "$WORK/s8/checkpoints" ]; then RESUME=(--resume); fi
OMP_NUM_THREADS=1 finally train --config finally-small/stage1 "${DATA[@]}" \
    --set "init_from=$WORK/s7-model" "${COMMON[@]}" "${PHASE_C[@]}" \
    --set "overlays=[$WORK/grow1.yaml]" --set degradation.p_stationary=0.2 \
    --set "data.pairs=$WORK/pool-avg" --set data.p_pairs=0.25 \
    --set "data.targets=$WORK/clean-quiet" --set data.max_floor_db=0 --set optim.lr=3e-4 \
    --set steps=500 --run-dir "$WORK/s8" "${RESUME[@]}"
finally train export "$WORK/s8" --step 500 --blend-from "$WORK/s7-model" --blend 0.5 \
    --set spectral_restorer.mix_back=1 -o "$WORK/s8-model"
# i. Teacher targets for half the items again (these were 0.11; docs/training.md item 22):
#    250 steps of h's recipe from h with data.p_pairs=0.5, then half-way back towards h.
RESUME=()
if [ -d "$WORK/s9/checkpoints" ]; then RESUME=(--resume); fi
OMP_NUM_THREADS=1 finally train --config finally-small/stage1 "${DATA[@]}" \
    --set "init_from=$WORK/s8-model" "${COMMON[@]}" "${PHASE_C[@]}" \
    --set "overlays=[$WORK/grow1.yaml]" --set degradation.p_stationary=0.2 \
    --set "data.pairs=$WORK/pool-avg" --set data.p_pairs=0.5 \
    --set "data.targets=$WORK/clean-quiet" --set data.max_floor_db=0 --set optim.lr=3e-4 \
    --set steps=250 --run-dir "$WORK/s9" "${RESUME[@]}"
finally train export "$WORK/s9" --step 250 --blend-from "$WORK/s8-model" --blend 0.5 \
    -o "$WORK/s9-model"
# j. The geometric teacher, a backward GRU and the L1 spectral distance (these are 0.12;
#    docs/training.md items 24-26): the same pool's targets combined per STFT cell from
#    DeepFilterNet3's and DTLN's outputs (geometric mean of the magnitudes: a cell is quiet
#    where either peer made it quiet), a GRU that reads the stack's output backwards (grown
#    at zero, so the run starts from exactly i's output), absolute instead of squared
#    spectral errors; 1 750 steps of i's recipe from i, then half-way back towards i. The
#    shipped weights were trained before the engine's peak ceiling was dropped for this model
#    (item 26), so a rebuild differs on the few items a loud transient used to turn down.
printf 'spectral_restorer:\n  residual_gru_layers: 1\n  backward_gru_hidden: 256\n' \
    > "$WORK/grow1bw.yaml"
[ -f "$WORK/pool-geo/manifest.csv" ] || python -m finally_cli.training.recipes.teacher \
    "$WORK/pool" -o "$WORK/pool-geo" --teacher deepfilternet3 --teacher dtln \
    --combine geometric
PHASE_J=(--set degradation.p_stationary=0.2 --set "data.pairs=$WORK/pool-geo"
         --set data.p_pairs=0.5 --set loss.spectral_distance=l1
         --set "data.targets=$WORK/clean-quiet" --set data.max_floor_db=0 --set optim.lr=3e-4)
# phase_j RUN FROM OVERLAY STEPS OUT: j's recipe from FROM's weights grown by OVERLAY, STEPS
# steps in RUN, then half-way back towards FROM, written to OUT.
phase_j() {
  local resume=()
  if [ -d "$WORK/$1/checkpoints" ]; then resume=(--resume); fi
  OMP_NUM_THREADS=1 finally train --config finally-small/stage1 "${DATA[@]}" \
      --set "init_from=$WORK/$2" "${COMMON[@]}" "${PHASE_C[@]}" \
      --set checkpoint_every=250 --set "overlays=[$WORK/$3]" "${PHASE_J[@]}" \
      --set "steps=$4" --run-dir "$WORK/$1" "${resume[@]}"
  finally train export "$WORK/$1" --step "$4" --blend-from "$WORK/$2" --blend 0.5 \
      -o "$WORK/$5"
}
phase_j s10 s9-model grow1bw.yaml 1750 s10-model
# k. A bin refiner (these were 0.14; docs/training.md items 28-29): a per-bin, per-frame gain on
#    the deep-filtered bins from a small 2-D conv over their log power (grown at gain 1, so
#    the run starts from exactly j's output); 1 500 steps of j's recipe from j, then
#    half-way back towards j.
{ cat "$WORK/grow1bw.yaml"; printf '  bin_refiner_channels: 16\n'; } > "$WORK/grow1bwbr.yaml"
phase_j s11 s10-model grow1bwbr.yaml 1500 s11-model
# l. Two seeds, averaged (these are 0.15; docs/training.md item 30): a second, low-SNR pool
#    (1 000 noise-only pairs at -5..5 dB SNR, seed 78) with geometric targets, pooled with the
#    first; 500 steps of k's recipe from k with data seeds 1 and 2; the two runs' weights
#    averaged (export --with) and the mean taken half-way back towards k.
[ -f "$WORK/pool-b/manifest.csv" ] || finally train prepare-val --config finally-small/stage1 \
    "${DATA[@]}" "${NOISE_ONLY[@]}" --set "degradation.snr_db=[-5,5]" -o "$WORK/pool-b" \
    --count 1000 --seed 78
[ -f "$WORK/pool-geo-b/manifest.csv" ] || python -m finally_cli.training.recipes.teacher \
    "$WORK/pool-b" -o "$WORK/pool-geo-b" --teacher deepfilternet3 --teacher dtln \
    --combine geometric
# pooled RUN FROM OVERLAY SEED: k's recipe on both pools, 500 steps from FROM's weights grown
# by OVERLAY, data seed SEED.
pooled() {
  local resume=()
  if [ -d "$WORK/$1/checkpoints" ]; then resume=(--resume); fi
  OMP_NUM_THREADS=1 finally train --config finally-small/stage1 "${DATA[@]}" \
      --set "init_from=$WORK/$2" "${COMMON[@]}" "${PHASE_C[@]}" \
      --set checkpoint_every=250 --set "overlays=[$WORK/$3]" "${PHASE_J[@]}" \
      --set "data.pairs=[$WORK/pool-geo,$WORK/pool-geo-b]" --set "seed=$4" \
      --set steps=500 --run-dir "$WORK/$1" "${resume[@]}"
}
for seed in 1 2; do pooled "s12-$seed" s11-model grow1bwbr.yaml "$seed"; done
[ -d "$WORK/s12-model" ] || finally train export "$WORK/s12-1" --step 500 \
    --with "$WORK/s12-2" --blend-from "$WORK/s11-model" --blend 0.5 -o "$WORK/s12-model"
# m. A wider restorer (this is 0.16; docs/training.md item 31): l's weights grown to 384
#    recurrent units (the new units start unread, so the run starts from exactly l's
#    output), 500 steps of l's recipe with data seed 5, then half-way back towards l.
{ cat "$WORK/grow1bwbr.yaml"; printf '  hidden: 384\n'; } > "$WORK/grow384.yaml"
pooled s13 s12-model grow384.yaml 5
finally train export "$WORK/s13" --step 500 --blend-from "$WORK/s12-model" --blend 0.5 \
    -o "$WORK/finally-small"
