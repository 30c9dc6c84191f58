#!/usr/bin/env bash
# statectl against checkpoints and savepoints the wordcount job wrote: every command on both backends,
# `dump` of a canonical savepoint adding up to the input's words, `dump --ttl-ms` of a TTL state,
# `--json` output, a damaged file that `verify` must name (exit 2), the orphan sweep with a stray file,
# and, with a checkpoint URL on S3, the same against the S3 test server.
# usage: scripts/statectl-check.sh [CHECKPOINT_URL]
#   CHECKPOINT_URL: default a new local directory; s3://bucket/prefix needs the S3 variables
#   (`. scripts/s3-test-server.sh`) and builds with --features aws.
set -euo pipefail
cd "$(dirname "$0")/.."
url="${1:-}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/statebackend-target}"
features=()
[[ "$url" == s3://* ]] && features=(--features aws)
cargo build -q --release --example wordcount --bin statectl "${features[@]}"
job_bin="$CARGO_TARGET_DIR/release/examples/wordcount"
ctl="$CARGO_TARGET_DIR/release/statectl"
work=$(mktemp -d)
ck="${url:-$work/checkpoints}"
fail() { echo "statectl-check: $*" >&2; exit 1; }
expect() { # $1: what, $2: pattern, $3: file
  grep -q -- "$2" "$3" || { cat "$3" >&2; fail "$1: \`$2\` not in the output"; }
}

for backend in heap rocksdb; do
  job="statectl-$backend-$$"
  root="${ck%/}/$job"
  "$job_bin" --backend "$backend" --records 300000 --checkpoint-every 50000 --parallelism 2 --retained 3 \
    --checkpoint-dir "$ck" --job-id "$job" --local-dir "$work/local" \
    --stop-with-savepoint "$ck" >"$work/job.log"
  sp=$(sed -n 's/^stopped with savepoint at source offset [0-9]*: //p' "$work/job.log")
  [ -n "$sp" ] || fail "$backend: the job printed no savepoint"

  "$ctl" list "$root" >"$work/out"
  expect "$backend list" '^checkpoint .* complete$' "$work/out"
  expect "$backend list" '^savepoint .* complete$' "$work/out"
  "$ctl" list "$root" --json >"$work/out"
  expect "$backend list --json" '"status":"complete"' "$work/out"
  latest=$(sed -n 's/^checkpoint *\([0-9]*\) .* complete$/\1/p' <("$ctl" list "$root") | tail -1)

  "$ctl" history "$root" >"$work/out"
  expect "$backend history" 'sync ms' "$work/out"
  expect "$backend history" '#' "$work/out"
  "$ctl" history "$root" --json >"$work/out"
  expect "$backend history --json" '"uploaded_bytes"' "$work/out"

  "$ctl" inspect "$root/chk-$latest" >"$work/out"
  expect "$backend inspect" 'key groups \[0, 63\]' "$work/out"
  expect "$backend inspect" 'operator state source-offset' "$work/out"
  "$ctl" inspect "$sp" >"$work/out"
  expect "$backend inspect savepoint" 'state word-count .* value .* key utf8' "$work/out"
  "$ctl" inspect "$sp" --json >"$work/out"
  expect "$backend inspect --json" '"format":"canonical keyed file"' "$work/out"

  "$ctl" verify "$root/chk-$latest" >"$work/out"
  expect "$backend verify" 'all intact' "$work/out"
  "$ctl" verify "$sp" --json >"$work/out"
  expect "$backend verify --json" '"intact":true' "$work/out"

  # The savepoint's counts add up to every word of the input.
  total=$("$ctl" dump "$sp" --state word-count | awk -F'\t' '{ s += $4 } END { print s }')
  [ "$total" = 300000 ] || fail "$backend dump: the counts add up to $total, not 300000"
  # Entries counted by inspect: one per distinct word, as many as dump prints.
  words=$("$ctl" dump "$sp" --state word-count | wc -l)
  entries=$("$ctl" inspect "$sp" --entries | sed -n 's/^ *state word-count .*, \([0-9]*\) entries$/\1/p' \
    | awk '{ s += $1 } END { print s }')
  [ "$entries" = "$words" ] || fail "$backend inspect --entries: $entries entries, dump has $words words"
  "$ctl" dump "$sp" --state word-count --key-group 5 --json >"$work/out"
  expect "$backend dump --json" '"key_group":5,"namespace":"-"' "$work/out"
  if [ "$backend" = rocksdb ]; then
    if "$ctl" dump "$root/chk-$latest" --state word-count 2>"$work/err"; then
      fail "dump of a native LSM checkpoint succeeded"
    fi
    expect "dump of a native checkpoint" 'native LSM snapshot' "$work/err"
  fi

  # The latest checkpoint (at the end of the input, as the savepoint) converted to a canonical savepoint:
  # the same counts as the job's own savepoint, and wordcount continues from it on the heap backend.
  "$ctl" savepoint convert "$root/chk-$latest" "$work/converted" >"$work/out"
  conv=$(sed -n 's/.* converted to the canonical savepoint //p' "$work/out")
  [ -n "$conv" ] || { cat "$work/out" >&2; fail "$backend convert printed no savepoint"; }
  "$ctl" verify "$conv" >/dev/null
  cmp <("$ctl" dump "$sp" --state word-count) <("$ctl" dump "$conv" --state word-count) \
    || fail "$backend: the converted checkpoint's counts differ from the savepoint's"
  # Converting again into the same target reserves the next free id there: a second savepoint, the first
  # one untouched.
  "$ctl" savepoint convert "$root/chk-$latest" "$work/converted" >"$work/out"
  again=$(sed -n 's/.* converted to the canonical savepoint //p' "$work/out")
  [ -n "$again" ] && [ "$again" != "$conv" ] || fail "$backend convert twice: wrote '$again' over '$conv'"
  "$ctl" verify "$conv" >/dev/null
  cmp <("$ctl" dump "$conv" --state word-count) <("$ctl" dump "$again" --state word-count) \
    || fail "$backend convert twice: the two savepoints' counts differ"
  "$job_bin" --records 300000 --from-savepoint "$conv" --checkpoint-dir "$work/after" \
    --job-id "after-$backend" >"$work/out"
  expect "$backend wordcount from the converted savepoint" '^verified: .* exactly-once$' "$work/out"
  rm -rf "$work/converted" "$work/after"

  "$ctl" du "$root" >"$work/out"
  expect "$backend du" 'what deleting each snapshot alone would free' "$work/out"
  "$ctl" du "$root" --json >"$work/out"
  expect "$backend du --json" '"bytes_freed_by_deleting"' "$work/out"

  if [ -z "$url" ]; then
    # A stray file: gc --dry-run names it and keeps it, gc deletes it; nothing else goes.
    mkdir -p "$root/shared"
    echo stray >"$root/shared/stray-file"
    "$ctl" gc "$root" --dry-run --min-age 0s >"$work/out"
    expect "$backend gc --dry-run" '^would delete shared/stray-file$' "$work/out"
    [ -f "$root/shared/stray-file" ] || fail "$backend: gc --dry-run deleted"
    "$ctl" gc "$root" --min-age 0s --json >"$work/out"
    expect "$backend gc" '"deleted":\["shared/stray-file"\]' "$work/out"
    [ ! -e "$root/shared/stray-file" ] || fail "$backend: gc kept the stray file"
    "$ctl" verify "$root/chk-$latest" >/dev/null || fail "$backend: gc damaged a checkpoint"

    # Damage one referenced file: verify names it and exits 2.
    victim=$("$ctl" inspect "$root/chk-$latest" --json \
      | grep -o '"path":"[^"]*","scope":"[a-z]*","size_bytes":[0-9]*' \
      | awk -F'"' '{ split($0, a, "size_bytes\":"); if (a[2] + 0 > 100) { print $4; exit } }')
    [ -n "$victim" ] || fail "$backend: no file over 100 bytes to damage"
    printf 'X' | dd of="$root/$victim" bs=1 seek=20 conv=notrunc status=none
    set +e
    "$ctl" verify "$root/chk-$latest" >"$work/out"
    code=$?
    set -e
    [ "$code" -eq 2 ] || fail "$backend: verify of a damaged checkpoint exited $code"
    expect "$backend verify damaged" "^DAMAGED $victim: CRC32" "$work/out"
    rm "$root/$victim"
    set +e
    "$ctl" verify "$root/chk-$latest" >"$work/out"
    code=$?
    set -e
    [ "$code" -eq 2 ] || fail "$backend: verify with a missing file exited $code"
    expect "$backend verify missing" "^DAMAGED $victim: missing" "$work/out"
  fi
  echo "statectl-check: $backend on ${url:-a local directory}: ok"
done
# A TTL state (wordcount --ttl-ms: event time is the source offset): dump --ttl-ms judges each count at
# --now-ms. At the savepoint's own offset none has expired (the savepoint left out what had) and there are
# as many as the job counted live; a TTL later, all have.
"$job_bin" --records 300000 --ttl-ms 20000 --parallelism 2 --checkpoint-dir "$ck" --job-id "statectl-ttl-$$" \
  --stop-with-savepoint "$ck" >"$work/job.log"
sp=$(sed -n 's/^stopped with savepoint at source offset [0-9]*: //p' "$work/job.log")
at=$(sed -n 's/^stopped with savepoint at source offset \([0-9]*\): .*/\1/p' "$work/job.log")
live=$(sed -n 's/^verified: [0-9]* words, \([0-9]*\) distinct counts live.*/\1/p' "$work/job.log")
[ -n "$sp" ] && [ -n "$at" ] && [ -n "$live" ] || { cat "$work/job.log" >&2; fail "ttl: no savepoint or count"; }
"$ctl" dump "$sp" --state word-count --ttl-ms 20000 --now-ms "$at" >"$work/out"
expect "dump --ttl-ms" 'written at [0-9]* ms, expires at [0-9]* ms)$' "$work/out"
! grep -q 'expired)' "$work/out" || fail "dump --ttl-ms at the savepoint's offset shows an expired count"
[ "$(wc -l <"$work/out")" = "$live" ] || fail "dump --ttl-ms: $(wc -l <"$work/out") counts, the job had $live"
[ "$("$ctl" dump "$sp" --state word-count --ttl-ms 20000 --now-ms $((at + 20000)) | grep -c 'expired)$')" \
  = "$live" ] || fail "dump --ttl-ms a TTL later: not every count expired"
echo "statectl-check: dump --ttl-ms: ok"
# A bad argument is one line on stderr and exit 1.
set +e
"$ctl" inspect "$work/not-a-snapshot" 2>"$work/err"
code=$?
set -e
[ "$code" -eq 1 ] && [ "$(wc -l <"$work/err")" -eq 1 ] || fail "a bad CHECKPOINT: exit $code, $(cat "$work/err")"
rm -rf "$work"
