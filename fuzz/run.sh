#!/usr/bin/env bash
# Fuzzes TARGET (restore, metadata, lsm_rows) for SECONDS with a 2 GiB RSS limit, from seed corpora the
# crate writes (created on first use in fuzz/corpus/TARGET). Needs cargo-fuzz (`cargo install cargo-fuzz
# --locked`) and the nightly toolchain; without one, the stable toolchain is let accept nightly flags
# (RUSTC_BOOTSTRAP=1), which is what cargo fuzz needs of it.
#   fuzz/run.sh TARGET SECONDS
set -euo pipefail
cd "$(dirname "$0")"
target="${1:?usage: fuzz/run.sh TARGET SECONDS}"
seconds="${2:?usage: fuzz/run.sh TARGET SECONDS}"
if cargo +nightly --version >/dev/null 2>&1; then
  cargo=(cargo +nightly)
else
  export RUSTC_BOOTSTRAP=1
  cargo=(cargo)
fi
if [ ! -d "corpus/$target" ] || [ -z "$(ls -A "corpus/$target" 2>/dev/null)" ]; then
  "${cargo[@]}" run -q --release --bin seeds -- corpus
fi
"${cargo[@]}" fuzz run "$target" "corpus/$target" -- \
  -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=1048576 -print_final_stats=1
