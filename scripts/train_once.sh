# train_once.sh -- sourced by the comparison scripts: `train_once RUN_DIR ARGS...` runs
# `charlm train --out-dir RUN_DIR ARGS...` unless RUN_DIR holds a finished run, and continues
# it with --resume when it holds any checkpoint. Needs the array `charlm` (the command).

train_once() {
    local run=$1
    shift
    if [[ -f $run/summary.json ]] && grep -q '"status": "finished"' "$run/summary.json"; then
        echo "skipped $run (finished)"
        return 0
    fi
    local resume=()
    compgen -G "$run/*.pt" > /dev/null && resume=(--resume)  # any checkpoint, step files included
    "${charlm[@]}" train --out-dir "$run" "${resume[@]}" "$@"
}
