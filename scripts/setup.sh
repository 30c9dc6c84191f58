#!/usr/bin/env bash
# Installs what building and testing statebackend needs on Debian, if missing. Idempotent; prints what it does.
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || need+=(make)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v c++ >/dev/null 2>&1 || need+=(g++)
# The rocksdb crate (default feature `rocksdb`) runs bindgen, which needs libclang itself (libclang.so or
# libclang-<version>.so); libclang-cpp, which other packages pull in, does not serve.
if ! ls /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*-linux-gnu/libclang-[0-9]*.so* >/dev/null 2>&1; then
  need+=(libclang-dev)
fi
# The S3 test server (moto, scripts/s3-test-server.sh) runs in a Python venv.
if ! command -v python3 >/dev/null 2>&1; then
  need+=(python3 python3-venv)
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install the Rust toolchain (rustup)" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/statebackend-target}"
echo "setup: ok (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
