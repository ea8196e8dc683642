#!/usr/bin/env bash
# sweep.sh -- train every combination of a small grid of config values, one run each.
#
# Usage: scripts/sweep.sh CONFIG KEY=V1,V2[,...] [KEY=V1,V2[,...]]...
#
# Example:
#   scripts/sweep.sh configs/tiny.yaml model.hidden_size=32,64 train.lr=0.01,0.003
#
#   makes four runs, the first `charlm train --config configs/tiny.yaml --set
#   model.hidden_size=32 --set train.lr=0.01 --out-dir runs/sweep-tiny/hidden_size-32_lr-0.01`,
#   then prints a table of every run sorted by best valid BPC, the `charlm runs` table, and
#   draws every run's curves into runs/sweep-tiny/curves.png with `charlm plot`.
#
# - Runs land under $SWEEP_DIR (default: runs/sweep-<config stem>), one directory per
#   combination, named from the settings: hidden_size-64_lr-0.003.
# - Restartable: a run whose summary.json says "finished" is skipped; a run that holds a
#   checkpoint but did not finish (stopped, killed, crashed) is continued with --resume.
# - A failed run does not stop the sweep; it is marked in the table and the sweep exits 1.
#   Ctrl-C stops the current run cleanly (it saves a checkpoint) and ends the sweep.
# - $CHARLM is the command to run (default: charlm), e.g. CHARLM="python -m charlm".
# - Values are split on commas, so a value cannot itself hold a comma.
#
# Exit status: 0 all runs finished; 1 a run failed; 2 bad usage; 130/143 interrupted.

set -euo pipefail

# The header comment is the help text: all of it for --help, usage and example on errors.
help_text() {
    sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"
}

usage_error() {
    {
        echo "sweep.sh: $1"
        sed -n '/^# Usage:/,/^#   scripts/{s/^# \{0,1\}//;p}' "$0"
        echo "(sweep.sh --help for more)"
    } >&2
    exit 2
}

# -- arguments ----------------------------------------------------------------------------

if [[ $# -ge 1 && ( $1 == -h || $1 == --help ) ]]; then
    help_text
    exit 0
fi
[[ $# -ge 1 ]] || usage_error "missing CONFIG"
config=$1
shift
[[ -f $config ]] || usage_error "config file not found: $config"
[[ $# -ge 1 ]] || usage_error "give at least one KEY=V1,V2 to sweep over"

keys=()
value_lists=()
for arg in "$@"; do
    [[ $arg == *=* ]] || usage_error "expected KEY=V1,V2,..., got '$arg'"
    key=${arg%%=*}
    list=${arg#*=}
    [[ $key =~ ^[A-Za-z0-9_.]+$ ]] || usage_error "bad key in '$arg'"
    if [[ -z $list || $list == ,* || $list == *, || $list == *,,* ]]; then
        usage_error "empty value in '$arg'"
    fi
    for seen in "${keys[@]+"${keys[@]}"}"; do
        [[ $seen != "$key" ]] || usage_error "key given twice: $key"
    done
    keys+=("$key")
    value_lists+=("$list")
done

read -r -a charlm <<< "${CHARLM:-charlm}"
if [[ ${#charlm[@]} -eq 0 ]] || ! command -v "${charlm[0]}" > /dev/null; then
    echo "sweep.sh: '${CHARLM:-charlm}' not found; activate the charlm environment or set CHARLM" >&2
    exit 1
fi

config_name=$(basename "$config")
sweep_dir=${SWEEP_DIR:-runs/sweep-${config_name%.*}}

# -- the grid -----------------------------------------------------------------------------

# Each combination is one string of KEY=VALUE settings joined by the unit separator (\x1f),
# which cannot occur in a command-line value typed by hand.
sep=$'\x1f'
combos=("")
for i in "${!keys[@]}"; do
    IFS=, read -r -a values <<< "${value_lists[$i]}"
    grown=()
    for combo in "${combos[@]}"; do
        for value in "${values[@]}"; do
            grown+=("${combo:+$combo$sep}${keys[$i]}=$value")
        done
    done
    combos=("${grown[@]}")
done

# The last part of each key names it (model.hidden_size -> hidden_size), unless two keys
# share a last part; then the whole key is used (model.x -> model.x).
short_names=1
for i in "${!keys[@]}"; do
    for j in "${!keys[@]}"; do
        if [[ $i -lt $j && ${keys[$i]##*.} == "${keys[$j]##*.}" ]]; then
            short_names=0
        fi
    done
done

# run_name SETTING... -> hidden_size-256_lr-0.003 (only letters, digits and . _ + -).
run_name() {
    local setting key value name=""
    for setting in "$@"; do
        key=${setting%%=*}
        value=${setting#*=}
        [[ $short_names == 1 ]] && key=${key##*.}
        value=$(printf '%s' "$value" | tr -c 'A-Za-z0-9._+-' '-')
        name+="${name:+_}$key-$value"
    done
    printf '%s' "$name"
}

names=()
for combo in "${combos[@]}"; do
    IFS=$sep read -r -a settings <<< "$combo"
    name=$(run_name "${settings[@]}")
    for seen in "${names[@]+"${names[@]}"}"; do
        [[ $seen != "$name" ]] || usage_error "two combinations would share the run directory $name; use distinct values"
    done
    names+=("$name")
done

# summary_status RUN_DIR -> the "status" of its summary.json, or nothing.
summary_status() {
    python3 -c '
import json, sys
try:
    with open(sys.argv[1], encoding="utf-8") as f:
        print(json.load(f).get("status") or "")
except (OSError, ValueError, AttributeError):
    pass
' "$1/summary.json"
}

# -- the runs -----------------------------------------------------------------------------

total=${#combos[@]}
echo "sweep: $total run(s) of $config under $sweep_dir"
mkdir -p "$sweep_dir"

results=()  # "NAME<TAB>STATUS" per run, for the table
failed=0
interrupted=0
for i in "${!combos[@]}"; do
    name=${names[$i]}
    run_dir=$sweep_dir/$name
    IFS=$sep read -r -a settings <<< "${combos[$i]}"
    label="[$((i + 1))/$total] $name"

    if [[ $(summary_status "$run_dir") == finished ]]; then
        echo "$label: skipped, already finished"
        results+=("$name"$'\t'"finished (skipped)")
        continue
    fi

    cmd=("${charlm[@]}" train --config "$config")
    for setting in "${settings[@]}"; do
        cmd+=(--set "$setting")
    done
    cmd+=(--out-dir "$run_dir")
    if compgen -G "$run_dir/*.pt" > /dev/null; then  # any checkpoint, step files included
        cmd+=(--resume)
        echo "$label: resuming unfinished run"
    else
        echo "$label: training"
    fi
    echo "  ${cmd[*]}"

    rc=0
    "${cmd[@]}" || rc=$?
    if [[ $rc -eq 0 ]]; then
        status=$(summary_status "$run_dir")
        if [[ $status == finished ]]; then
            results+=("$name"$'\t'"finished")
        else
            # charlm said "already finished" on --resume but never wrote a finished summary
            # (e.g. stopped or killed after its last step): there is no test score to report.
            results+=("$name"$'\t'"FAILED (summary: ${status:-none})")
            failed=$((failed + 1))
            echo "$label: FAILED: exit 0 but summary.json says '${status:-nothing}'" >&2
        fi
    elif [[ $rc -eq 130 || $rc -eq 143 ]]; then
        results+=("$name"$'\t'"stopped")
        interrupted=$rc
        echo "$label: stopped by a signal; ending the sweep (run it again to continue)" >&2
        break
    else
        results+=("$name"$'\t'"FAILED (exit $rc)")
        failed=$((failed + 1))
        echo "$label: FAILED with exit status $rc; going on with the others" >&2
    fi
done

# -- the table ----------------------------------------------------------------------------

echo
python3 - "$sweep_dir" "${results[@]}" <<'PY'
import json
import math
import sys
from pathlib import Path

sweep_dir, records = Path(sys.argv[1]), sys.argv[2:]
rows = []
for record in records:
    name, status = record.split("\t", 1)
    try:
        summary = json.loads((sweep_dir / name / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    valid = summary.get("best_valid_bpc")
    test = (summary.get("test") or {}).get("bpc")
    rows.append((name, status, valid, test))

rows.sort(key=lambda row: (row[2] is None, row[2] if row[2] is not None else math.inf, row[0]))
fmt = lambda x: "-" if x is None else f"{x:.4f}"
table = [("run", "status", "best valid bpc", "test bpc")]
table += [(name, status, fmt(valid), fmt(test)) for name, status, valid, test in rows]
widths = [max(len(row[c]) for row in table) for c in range(4)]
for row in table:
    print(
        f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]:>{widths[3]}}".rstrip()
    )
PY

# The same runs through charlm's own tools: the full table, and the curves in one figure.
echo
"${charlm[@]}" runs "$sweep_dir" --sort best_valid_bpc || true
plotted=()
for record in "${results[@]}"; do
    [[ -f $sweep_dir/${record%%$'\t'*}/metrics.jsonl ]] && plotted+=("$sweep_dir/${record%%$'\t'*}")
done
if [[ ${#plotted[@]} -gt 0 ]]; then
    "${charlm[@]}" plot "${plotted[@]}" -o "$sweep_dir/curves.png" || true
fi

if [[ $interrupted -ne 0 ]]; then
    exit "$interrupted"
fi
if [[ $failed -gt 0 ]]; then
    echo >&2
    echo "sweep: $failed of $total runs failed" >&2
    exit 1
fi
