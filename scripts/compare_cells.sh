#!/usr/bin/env bash
# compare_cells.sh -- RNN (tanh), GRU, LSTM, minGRU and minLSTM at matched parameter budgets on
# PTB-char: the same data, steps, batch and optimiser, then one table and one plot.
#
# Usage: scripts/compare_cells.sh [STEPS] [OUT_DIR]
#   STEPS    optimizer steps per cell (default 600: about 4 minutes per cell on 2 CPU cores)
#   OUT_DIR  where the five runs, the table and the plot go (default runs/compare-cells)
#
# About 1.35M parameters each. The classic cells get one layer with a 128-wide embedding, sized
# to about 1.31M recurrent parameters: the LSTM has 4 weight blocks per unit, the GRU 3 and the
# plain RNN 1, so the hidden sizes are 512, 600 and 1084. The scan cells get two residual blocks
# of width 224 (embedding_dim; each block has an MLP of 4x that width) around states of 384
# units (minGRU: 2 projections of the input) and 288 (minLSTM: 3).
# Restartable: finished runs are skipped (scripts/sweep.sh semantics).
# $CONFIG sets the base config (default configs/ptb_cpu.yaml); $CHARLM the command (charlm).
set -euo pipefail

steps=${1:-600}
out=${2:-runs/compare-cells}
config=${CONFIG:-configs/ptb_cpu.yaml}
read -r -a charlm <<< "${CHARLM:-charlm}"
# shellcheck source=scripts/train_once.sh
source "$(dirname "$0")/train_once.sh"
[[ $steps =~ ^[0-9]+$ && $steps -ge 4 ]] || { echo "compare_cells.sh: STEPS must be a whole number >= 4, got '$steps'" >&2; exit 2; }
mkdir -p "$out"

eval_every=$(( steps / 4 ))
warmup=$(( steps / 10 ))
# cell:hidden_size:embedding_dim:num_layers
for spec in rnn_tanh:1084:128:1 gru:600:128:1 lstm:512:128:1 mingru:384:224:2 minlstm:288:224:2; do
    IFS=: read -r cell hidden embedding layers <<< "$spec"
    run="$out/$cell"
    train_once "$run" --config "$config" \
        --set model.cell="$cell" --set model.hidden_size="$hidden" --set model.num_layers="$layers" \
        --set model.embedding_dim="$embedding" \
        --set model.dropout=0.0 --set model.tie_weights=false \
        --set train.max_steps="$steps" --set train.eval_every="$eval_every" \
        --set train.warmup_steps="$warmup"
done

"${charlm[@]}" runs "$out" --sort best_valid_bpc
"${charlm[@]}" runs "$out" --sort best_valid_bpc --csv > "$out/cells.csv"
"${charlm[@]}" plot "$out/rnn_tanh" "$out/gru" "$out/lstm" "$out/mingru" "$out/minlstm" --x time -o "$out/cells.png"
