#!/usr/bin/env bash
# Throughput of the timely word count with and without checkpoints, 2 processes x 2 workers on localhost,
# alternating runs (the machine is noisy). Prints words/s of each run (all words / the slower process's
# time) and the median ratio.
# usage: scripts/timely-throughput.sh [heap|lsm] [WORDS_PER_SPLIT] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-heap}"
words="${2:-1250000}"
runs="${3:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/statebackend-target}"
cargo build -q --release --example timely_wordcount
bin="$CARGO_TARGET_DIR/release/examples/timely_wordcount"
work=$(mktemp -d)
. scripts/ports.sh
run() { # $1: label, rest: flags; prints words/s
  local label=$1
  shift
  pick_ports "$work/hosts"
  rm -rf "$work/ck" "$work/out"
  local common=(--backend "$backend" --checkpoint-dir "$work/ck" --output-dir "$work/out"
    --words-per-split "$words" --local-dir "$work/local" -w 2 -n 2 -h "$work/hosts" "$@")
  "$bin" "${common[@]}" -p 1 >"$work/p1.log" 2>&1 &
  local p1=$!
  "$bin" "${common[@]}" -p 0 >"$work/p0.log" 2>&1
  wait "$p1"
  "$bin" "${common[@]}" --verify >/dev/null
  local total secs
  total=$(cat "$work"/p*.log | grep -o '^process [0-9]*: [0-9]* words' | awk '{s += $3} END {print s}')
  secs=$(cat "$work"/p*.log | grep -o 'words in [0-9.]* s' | awk '$3 > m {m = $3} END {print m}')
  local checkpoints
  checkpoints=$(grep -c 'completed' "$work/p0.log" || true)
  awk -v t="$total" -v s="$secs" -v c="$checkpoints" -v l="$label" \
    'BEGIN { printf "%s: %d words in %.2f s, %.0f words/s, %d checkpoints\n", l, t, s, t / s, c }' >&2
  awk -v t="$total" -v s="$secs" 'BEGIN { printf "%.0f\n", t / s }'
}
with=() without=()
for _ in $(seq "$runs"); do
  with+=("$(run checkpoints)")
  without+=("$(run no-checkpoints --no-checkpoints)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
mw=$(median "${with[@]}") mo=$(median "${without[@]}")
awk -v a="$mw" -v b="$mo" 'BEGIN { printf "median: %d words/s with checkpoints, %d without, ratio %.2f\n", a, b, a / b }'
rm -rf "$work"
