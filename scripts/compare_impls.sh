#!/usr/bin/env bash
# compare_impls.sh -- fused kernels against the reference cells of charlm/cells.py on PTB-char:
# fused LSTM, reference LSTM, the tutorial's GRU (reference), cuDNN's GRU (fused), Mogrifier LSTM.
# Same data, steps, batch and optimiser (one layer of 256 units, batch 32 x 64 characters).
#
# Usage: scripts/compare_impls.sh [STEPS] [OUT_DIR]   (defaults: 1500, runs/compare-impls)
# Restartable: finished runs are skipped. $CONFIG sets the base config (configs/ptb_cpu.yaml),
# $CHARLM the command (charlm).
set -euo pipefail

steps=${1:-1500}
out=${2:-runs/compare-impls}
config=${CONFIG:-configs/ptb_cpu.yaml}
read -r -a charlm <<< "${CHARLM:-charlm}"
# shellcheck source=scripts/train_once.sh
source "$(dirname "$0")/train_once.sh"
[[ $steps =~ ^[0-9]+$ && $steps -ge 3 ]] || { echo "compare_impls.sh: STEPS must be a whole number >= 3, got '$steps'" >&2; exit 2; }
mkdir -p "$out"

for spec in lstm:fused lstm:reference gru:reference gru:fused mogrifier_lstm:reference; do
    cell=${spec%%:*}
    impl=${spec#*:}
    run="$out/${cell}-${impl}"
    train_once "$run" --config "$config" \
        --set model.cell="$cell" --set model.impl="$impl" --set model.num_layers=1 \
        --set model.hidden_size=256 --set model.embedding_dim=64 --set model.dropout=0.0 \
        --set train.batch_size=32 --set train.seq_len=64 --set train.max_steps="$steps" \
        --set train.eval_every=$(( steps / 3 )) --set train.warmup_steps=$(( steps / 10 )) \
        --set train.test_batch_size=64
done

"${charlm[@]}" runs "$out" --sort best_valid_bpc
"${charlm[@]}" runs "$out" --sort best_valid_bpc --csv > "$out/impls.csv"
