#!/usr/bin/env bash
# Process death: runs the example job, kills it with SIGKILL at a random moment (during record processing,
# synchronous and asynchronous checkpoint phases and metadata writes alike), restarts it with --resume,
# KILLS times; then lets it finish and checks
#   - the counts equal a single-pass count (the job's own `verified: ... exactly-once`),
#   - storage holds nothing that no retained checkpoint references, staging files included (the job's
#     final sweep report, and, for a local directory, no `name#digits` staging file),
#   - no LSM instance directory is left in the local directory,
#   - the last restore read every file from the local copies of local recovery (`docs/local-recovery.md`:
#     a copy is published before its checkpoint can complete, so the latest completed one always has one).
# usage: scripts/kill-loop.sh [heap|heap-incremental|rocksdb] [KILLS] [CHECKPOINT_URL]
#   heap-incremental: the heap backend with incremental checkpoints (chains of shared files).
#   CHECKPOINT_URL: default a new local directory; s3://bucket/prefix needs the S3 variables
#   (`. scripts/s3-test-server.sh`) and builds the job with --features aws.
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-heap}"
kills="${2:-50}"
url="${3:-}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/statebackend-target}"
features=()
[[ "$url" == s3://* ]] && features=(--features aws)
cargo build -q --release --example wordcount --bin statectl "${features[@]}"
bin="$CARGO_TARGET_DIR/release/examples/wordcount"
ctl="$CARGO_TARGET_DIR/release/statectl"
work=$(mktemp -d)
ck="${url:-$work/checkpoints}"
job="kill-loop-$backend-$$"
# A file source: a restarted run seeks to the checkpointed offset at once (a generated stream would be
# generated again first). Skewed words, as the job's own generator makes.
awk -v n="${KILL_LOOP_LINES:-8000000}" 'BEGIN { srand(7); for (i = 0; i < n; i++) print "w" int(60000 * rand() ^ 3) }' >"$work/input.txt"
backend_args=(--backend "$backend")
[ "$backend" = heap-incremental ] && backend_args=(--backend heap --heap-incremental)
args=("${backend_args[@]}" --input "$work/input.txt" --checkpoint-every 25000
  --parallelism 2 --retained 2 --restart none --checkpoint-dir "$ck" --job-id "$job"
  --local-dir "$work/local" --local-recovery-dir "$work/recovery" --output "$work/counts.tsv")
killed=0 finished_early=0 mid_checkpoint=0 staged_kills=0 runs=0
resume=()
while [ "$killed" -lt "$kills" ]; do
  "$bin" "${args[@]}" "${resume[@]}" >"$work/run.log" 2>&1 &
  pid=$!
  # 20 ms to 1 s: a start-up, a restore, or some checkpoints into the run.
  sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.3f", 0.02 + (r / 32767) * 0.98 }')"
  if kill -9 "$pid" 2>/dev/null; then
    killed=$((killed + 1))
    wait "$pid" 2>/dev/null || true
    # Evidence the kill hit a checkpoint in flight: a staging file of a half-written object, or a
    # checkpoint directory with state files but no _metadata (the asynchronous phase or the metadata write
    # was cut off). Reservation markers alone do not count.
    if [ -z "$url" ]; then
      staged=$(find "$ck/$job" -name '*#[0-9]*' 2>/dev/null | wc -l)
      partial=0
      for d in "$ck/$job"/chk-*; do
        [ -d "$d" ] && [ ! -e "$d/_metadata" ] &&
          [ "$(find "$d" -type f ! -name _trigger | wc -l)" -gt 0 ] && partial=1
      done
      [ "$staged" -gt 0 ] && staged_kills=$((staged_kills + 1))
      [ $((staged + partial)) -gt 0 ] && mid_checkpoint=$((mid_checkpoint + 1))
    fi
  else
    # It finished before the kill: the run must still be correct. The next run starts the job afresh
    # (which first deletes this one's checkpoints).
    wait "$pid" || { cat "$work/run.log"; echo "kill-loop: a run failed"; exit 1; }
    finished_early=$((finished_early + 1))
    grep -q '^verified: .* exactly-once$' "$work/run.log" || { cat "$work/run.log"; exit 1; }
    runs=$((runs + 1))
    resume=()
    continue
  fi
  runs=$((runs + 1))
  resume=(--resume)
done
"$bin" "${args[@]}" --resume >"$work/final.log" 2>&1 || { cat "$work/final.log"; echo "kill-loop: the final run failed"; exit 1; }
grep -E '^(verified|storage after|nothing to resume|  attempt)' "$work/final.log"
grep -q '^verified: .* exactly-once$' "$work/final.log"
# A restore of the final run read nothing from checkpoint storage.
if grep -q 'restored checkpoint' "$work/final.log"; then
  grep -q 'restored checkpoint .* files: [0-9]* local, 0 from storage' "$work/final.log" ||
    { echo "kill-loop: the final restore did not read its files from the local copies"; exit 1; }
fi
copies=$( (find "$work/recovery" -mindepth 3 -maxdepth 3 -name 'chk-*' 2>/dev/null || true) | wc -l)
# storage after the sweep: L files, R of retained checkpoints ..., K kept unreferenced ..., D deleted
read -r listed referenced kept < <(sed -nE 's/^storage after the sweep: ([0-9]+) files, ([0-9]+) of .*, ([0-9]+) kept .*/\1 \2 \3/p' "$work/final.log")
leaked_local=$( (find "$work/local" -mindepth 1 -maxdepth 1 2>/dev/null || true) | wc -l)
staging=0
[ -z "$url" ] && staging=$(find "$ck/$job" -name '*#[0-9]*' | wc -l)
# Every retained checkpoint is restorable: each file there with its size and CRC32.
root="${ck%/}/$job"
retained=0
"$ctl" list "$root" >"$work/list.log" || { cat "$work/list.log"; echo "kill-loop: statectl list failed"; exit 1; }
for id in $(sed -n 's/^checkpoint *\([0-9]*\) .* complete$/\1/p' "$work/list.log"); do
  "$ctl" verify "$root/chk-$id" >"$work/verify.log" || { cat "$work/verify.log"; echo "kill-loop: checkpoint $id is damaged"; exit 1; }
  retained=$((retained + 1))
done
[ "$retained" -gt 0 ] || { echo "kill-loop: no retained checkpoint"; exit 1; }
# No incomplete multipart upload is left where the store lists them (S3).
uploads=$("$ctl" du "$root" --json | sed -n 's/.*"incomplete_multipart_uploads":\([0-9a-z]*\).*/\1/p')
echo "kill-loop: $retained retained checkpoints verified; incomplete multipart uploads: $uploads"
[ "$uploads" = "0" ] || [ "$uploads" = "null" ] || { echo "kill-loop: multipart uploads left"; exit 1; }
echo "kill-loop: $backend, $killed kills in $runs runs ($mid_checkpoint left a checkpoint in flight, $staged_kills of them a staging file; $finished_early runs finished first); final: $listed files in storage, $referenced referenced, $kept kept unreferenced, $staging staging files, $leaked_local local directories left, $copies local checkpoint copies kept"
# Local copies: a backend keeps its last confirmed checkpoint and the unresolved ones after it; a job
# started afresh (after a run that finished first) begins a new line of ids, and the old line's copies
# stay (local disk only; a restore checks every byte).
[ "$copies" -le $((4 * (finished_early + 1))) ] || { find "$work/recovery"; echo "kill-loop: local copies pile up"; exit 1; }
# The one unreferenced file allowed is the id watermark (`_trigger` of the highest aborted id).
[ "$kept" -le 1 ] && [ "$staging" -eq 0 ] && [ "$leaked_local" -eq 0 ] || {
  echo "kill-loop: leftovers:"
  [ -z "$url" ] && find "$ck/$job" -name '*#[0-9]*'
  (find "$work/local" -mindepth 1 -maxdepth 1 2>/dev/null || true)
  exit 1
}
echo "kill-loop: ok"
rm -rf "$work"
