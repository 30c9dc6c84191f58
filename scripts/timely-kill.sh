#!/usr/bin/env bash
# The timely word count across processes, with failures and a rescale:
#   1. 2 processes x 2 workers on localhost; one process is killed with SIGKILL mid-run (after at least
#      one completed checkpoint); the other loses its peer and exits; both are restarted with --resume;
#   2. the restarted job is killed again (SIGKILL, both processes) and resumed at 3 workers in one
#      process (rescale 4 -> 3), killed again, and resumed at 2 x 2 (rescale 3 -> 4) to the end;
#   3. the output must equal a single-pass count (`--verify`).
# usage: scripts/timely-kill.sh [heap|lsm] [WORDS_PER_SPLIT] [CHECKPOINT_URL] [-- extra job flags]
#   CHECKPOINT_URL: default a new local directory; s3://bucket/prefix needs the S3 variables
#   (`. scripts/s3-test-server.sh`) and builds with --features aws.
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-heap}"
words="${2:-2000000}"
url="${3:-}"
shift $(( $# < 3 ? $# : 3 ))
[ "${1:-}" = "--" ] && shift
extra=("$@")
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/statebackend-target}"
features=()
[[ "$url" == s3://* ]] && features=(--features aws)
cargo build -q --release --example timely_wordcount "${features[@]}"
bin="$CARGO_TARGET_DIR/release/examples/timely_wordcount"
work=$(mktemp -d)
ck="${url:-$work/checkpoints}"
. scripts/ports.sh
pick_ports "$work/hosts"
common=(--backend "$backend" --checkpoint-dir "$ck" --job-id "timely-kill-$$" --output-dir "$work/out"
  --words-per-split "$words" --local-dir "$work/local" "${extra[@]}")

# Waits until worker 0's log ($2) reports a completed checkpoint above $1, at most 60 s, or until its
# process ($3) ends (the run finished first: then the next phase resumes from the same checkpoint).
# Prints the newest completed checkpoint id.
wait_for_checkpoint_after() {
  local after=$1 log=$2 pid=$3 last
  for _ in $(seq 600); do
    last=$(grep -o 'checkpoint [0-9]* completed' "$log" 2>/dev/null | awk '{print $2}' | tail -1)
    if [ -n "$last" ] && [ "$last" -gt "$after" ]; then echo "$last"; return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "  (the run ended before a new checkpoint; the end of its log:)" >&2
      tail -5 "$log" | sed 's/^/    /' >&2
      echo "$after"
      return 0
    fi
    sleep 0.1
  done
  echo "no checkpoint completed in 60 s" >&2
  cat "$log" >&2
  return 1
}

# Starts both processes. If one cannot listen on its port (a service of the machine holds it), both are
# stopped and started again on other ports; any other early end is left to the checks below.
start_cluster() { # $1: log prefix; other args: extra flags
  local prefix=$1 attempt; shift
  for attempt in 1 2 3 4 5; do
    "$bin" "${common[@]}" -w 2 -n 2 -h "$work/hosts" -p 1 "$@" >"$work/$prefix-p1.log" 2>&1 &
    p1=$!
    "$bin" "${common[@]}" -w 2 -n 2 -h "$work/hosts" -p 0 "$@" >"$work/$prefix-p0.log" 2>&1 &
    p0=$!
    sleep 0.5
    if ! grep -q 'Address already in use' "$work/$prefix-p0.log" "$work/$prefix-p1.log"; then return 0; fi
    echo "  ($prefix: port $base or $((base + 1)) is in use on this machine; new ports, attempt $((attempt + 1)))"
    kill -9 "$p0" "$p1" 2>/dev/null || true
    wait "$p0" "$p1" 2>/dev/null || true
    pick_ports "$work/hosts"
  done
  echo "no free ports after 5 attempts" >&2
  exit 1
}

# 1. Two processes; SIGKILL one of them mid-run.
start_cluster run1
done_ck=$(wait_for_checkpoint_after 0 "$work/run1-p0.log" "$p0")
kill -9 "$p1" 2>/dev/null || true
echo "run 1 (2 x 2 workers): checkpoint $done_ck completed, process 1 killed"
# The survivor loses its peer; it must not finish the job on its own.
for _ in $(seq 100); do kill -0 "$p0" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$p0" 2>/dev/null; then kill -9 "$p0"; echo "  process 0 did not exit on its own: killed"; fi
wait "$p0" 2>/dev/null || true
wait "$p1" 2>/dev/null || true

# 2. Resume on 2 x 2, kill both after a new checkpoint.
start_cluster run2 --resume
done_ck=$(wait_for_checkpoint_after "$done_ck" "$work/run2-p0.log" "$p0")
kill -9 "$p0" "$p1" 2>/dev/null || true
wait "$p0" "$p1" 2>/dev/null || true
echo "run 2 (resumed, 2 x 2): $(grep -o 'restoring [a-z0-9 ]*' "$work/run2-p0.log"), checkpoint $done_ck completed, both killed"

# Rescale 4 -> 3 workers in one process, killed after a new checkpoint.
"$bin" "${common[@]}" -w 3 --resume >"$work/run3.log" 2>&1 &
p=$!
done_ck=$(wait_for_checkpoint_after "$done_ck" "$work/run3.log" "$p")
kill -9 "$p" 2>/dev/null || true
wait "$p" 2>/dev/null || true
echo "run 3 (resumed at 3 workers): $(grep -o 'restoring [a-z0-9 ]*' "$work/run3.log"), checkpoint $done_ck completed, killed"

# 3. Rescale 3 -> 4 (2 x 2) and run to the end.
start_cluster run4 --resume
for p in "$p0" "$p1"; do
  if ! wait "$p"; then
    echo "run 4 failed; the end of each process's log:" >&2
    tail -5 "$work/run4-p0.log" "$work/run4-p1.log" >&2
    exit 1
  fi
done
echo "run 4 (resumed at 2 x 2): $(grep -o 'restoring [a-z0-9 ]*' "$work/run4-p0.log"), finished"
grep -h 'words/s' "$work/run4-p0.log" "$work/run4-p1.log"
"$bin" "${common[@]}" -w 2 -n 2 --verify
rm -rf "$work"
