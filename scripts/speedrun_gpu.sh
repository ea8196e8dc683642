#!/usr/bin/env bash
# PTB-char speedrun on one GPU: train configs/ptb_gpu_10min.yaml (time_budget: 10m), score test
# at batch 1 with the best checkpoint, and print the figures with the card's name.
#   scripts/speedrun_gpu.sh [RUN_DIR] [PTB_SOURCE]
# RUN_DIR: where the run goes (default runs/ptb_gpu_10min; an existing finished run is scored
# again, not retrained). PTB_SOURCE: a folder holding ptb.{train,valid,test}.txt for
# `charlm data fetch ptb --source` when the data root lacks PTB (default ../shared/data/ptb).
# Environment: CHARLM (the command, default `charlm`), CONFIG (default configs/ptb_gpu_10min.yaml),
# DEVICE (default cuda), TIME (a budget overriding the config's, e.g. 9m to fit a 10-minute slot).
set -euo pipefail

run=${1:-runs/ptb_gpu_10min}
source_dir=${2:-../shared/data/ptb}
read -r -a charlm <<< "${CHARLM:-charlm}"
config=${CONFIG:-configs/ptb_gpu_10min.yaml}
device=${DEVICE:-cuda}

if command -v nvidia-smi > /dev/null; then
    card=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -n 1)
else
    card="no nvidia-smi (device $device)"
fi
echo "card: $card"

if [[ -d $source_dir ]]; then
    "${charlm[@]}" data fetch ptb --source "$source_dir" > /dev/null
fi

overrides=(--set "train.device=$device")
[[ -n ${TIME:-} ]] && overrides+=(--time "$TIME")
started=$(date +%s.%N)
if ! { [[ -f $run/summary.json ]] && grep -q '"status": "finished"' "$run/summary.json"; }; then
    resume=()
    compgen -G "$run/*.pt" > /dev/null && resume=(--resume)
    "${charlm[@]}" train --config "$config" --out-dir "$run" "${resume[@]}" "${overrides[@]}"
fi
ended=$(date +%s.%N)
scored=$("${charlm[@]}" eval "$run" --split test --batch-size 1 --device "$device" --json)

python3 - "$run/summary.json" "$scored" "$card" "$started" "$ended" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
scored = json.loads(sys.argv[2])
card, started, ended = sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
budget = summary.get("budget") or {}
def minutes(s):
    return "-" if s is None else f"{s / 60:.2f} min"
print(f"card                 {card}")
print(f"test bpc (batch 1)   {scored['bpc']:.4f} ({scored['tokens']:,} tokens, best.pt, {scored['weights']} weights)")
print(f"best valid bpc       {summary.get('best_valid_bpc') or float('nan'):.4f} (at train.eval_batch_size, step {summary.get('best_step')})")
print(f"steps                {summary.get('step'):,} of max_steps {summary.get('max_steps'):,}")
print(f"time budget          {budget.get('time_budget', '-')}: planned end {minutes(budget.get('planned_end_s'))}, "
      f"actual {minutes(budget.get('actual_end_s'))}")
print(f"measured             {budget.get('step_s', 0) * 1000:.1f} ms/step, valid pass {budget.get('eval_s', 0):.2f} s, "
      f"save {budget.get('save_s', 0):.2f} s, test pass {budget.get('test_s', 0):.1f} s")
print(f"train / wall time    {minutes(summary.get('train_seconds'))} of optimizer steps; "
      f"{minutes(summary.get('wall_seconds'))} of wall time in charlm train; {minutes(ended - started)} by this script's clock")
print(f"chars/s (training)   {summary.get('chars_per_s') or 0:,.0f}")
print(f"moonshot (<= 1.25)   {'reached' if scored['bpc'] <= 1.25 else 'not reached'}")
PY
