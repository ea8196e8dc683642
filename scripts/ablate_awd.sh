#!/usr/bin/env bash
# ablate_awd.sh -- AWD-LSTM's regularisers on a fixed CPU budget: configs/ptb_cpu.yaml's model
# trained the same number of steps four ways, then one table.
#
# Usage: scripts/ablate_awd.sh [STEPS] [OUT_DIR]
#   STEPS    optimizer steps per variant (default 900: about 5 minutes each on 2 CPU cores)
#   OUT_DIR  where the runs and the table go (default runs/ablate-awd)
#
# Variants:
#   plain     the recipe as it is (no dropout)
#   ema       + an exponential moving average of the weights for evaluation (train.average: ema)
#   awd       + locked dropout (input 0.05, between layers 0.1, output 0.1), weight drop 0.2 and
#             variable-length BPTT
#   awd_ema   both
# Restartable: finished runs are skipped (scripts/sweep.sh semantics).
# $CONFIG sets the base config (default configs/ptb_cpu.yaml); $CHARLM the command (charlm).
set -euo pipefail

steps=${1:-900}
out=${2:-runs/ablate-awd}
config=${CONFIG:-configs/ptb_cpu.yaml}
read -r -a charlm <<< "${CHARLM:-charlm}"
# shellcheck source=scripts/train_once.sh
source "$(dirname "$0")/train_once.sh"
[[ $steps =~ ^[0-9]+$ && $steps -ge 4 ]] || { echo "ablate_awd.sh: STEPS must be a whole number >= 4, got '$steps'" >&2; exit 2; }
mkdir -p "$out"

budget=(--set train.max_steps="$steps" --set train.eval_every=$(( steps / 3 ))
        --set train.warmup_steps=$(( steps / 20 )) --set model.dropout=0.0)
ema=(--set train.average=ema)
awd=(--set model.dropout_input=0.05 --set model.dropout_hidden=0.1 --set model.dropout_output=0.1
     --set model.weight_drop=0.2 --set train.variable_bptt=true)

train_once "$out/plain" --config "$config" "${budget[@]}"
train_once "$out/ema" --config "$config" "${budget[@]}" "${ema[@]}"
train_once "$out/awd" --config "$config" "${budget[@]}" "${awd[@]}"
train_once "$out/awd_ema" --config "$config" "${budget[@]}" "${awd[@]}" "${ema[@]}"

"${charlm[@]}" runs "$out" --sort best_valid_bpc
"${charlm[@]}" runs "$out" --sort best_valid_bpc --csv > "$out/ablation.csv"
