#!/usr/bin/env bash
# Train segments on the device machine in one call: every CHAIN at once, for MINUTES of wall time.
#
#   bash segments/gpu_segments.sh MINUTES CHAIN [CHAIN ...]      (MINUTES: a whole number)
#
# A CHAIN is one config name (configs/NAME.yaml) or several joined by '+', trained one after the other
# (durr-denoise-compact+durr-policy-denoise-compact: the policy starts from the unit's final weights).
# A run with a folder in segments/ resumes from it, any other starts fresh. Every run stops by itself
# at the deadline (--time-limit) or at its last step; its checkpoint, config, log and weights are then
# copied into segments/NAME (there, for the next run of its chain) and packed with its console output
# into $OUT/NAME.tar, one file per run (the device tool returns at most 8). First a 2-step training on
# the device checks the path and stops everything if it fails. Environment: CONVERGE_DATA (the carried
# sets), OUT (set by the device tool), DEVICE (default cuda), RUNS (run folders, default
# /tmp/converge-runs), THREADS (CPU threads per run, default 2). segments/README.md has the whole recipe.
set -uo pipefail

minutes=$1
shift
device=${DEVICE:-cuda}
runs=${RUNS:-/tmp/converge-runs}
threads=${THREADS:-2}
deadline=$(($(date +%s) + minutes * 60))
export PYTHONPATH=src PYTHONUNBUFFERED=1
mkdir -p "$runs"

if ! python3 -m converge train configs/dncnn-blind-compact.yaml --run-dir "$runs/smoke" --until 2 \
    --device "$device" --threads "$threads" > "$runs/smoke.out" 2>&1; then
    echo "smoke check failed on $device:"
    tail -n 20 "$runs/smoke.out"
    exit 1
fi
echo "smoke check passed on $device"

train_one() {
    local name=$1 left resume=()
    left=$((deadline - $(date +%s)))
    if [ "$left" -lt 30 ]; then
        echo "$name: no time left, not started"
        return
    fi
    if [ -d "segments/$name" ]; then
        cp -r "segments/$name" "$runs/$name"
        resume=(--resume)
    fi
    python3 -m converge train "configs/$name.yaml" --run-dir "$runs/$name" "${resume[@]}" --device "$device" \
        --time-limit "$(awk -v s="$left" 'BEGIN { printf "%.2f", (s - 15) / 60 }')" --threads "$threads" \
        > "$runs/$name.out" 2>&1
    echo "$name: exit $?, $(tail -n 1 "$runs/$name/log.jsonl" 2>/dev/null)"
    local files=()
    for file in checkpoint.pt config.yaml log.jsonl model.safetensors model.yaml; do
        [ -f "$runs/$name/$file" ] && files+=("$file")
    done
    if [ "${#files[@]}" -eq 5 ]; then
        mkdir -p "segments/$name"
        cp "${files[@]/#/$runs/$name/}" "segments/$name/"
    fi
    tar -cf "$OUT/$name.tar" -C "$runs/$name" "${files[@]}" -C "$runs" "$name.out"
}

for chain in "$@"; do
    (
        IFS=+ read -ra names <<< "$chain"
        for name in "${names[@]}"; do
            train_one "$name"
        done
    ) &
done
wait
