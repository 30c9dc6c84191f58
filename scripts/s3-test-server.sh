#!/usr/bin/env bash
# Starts an S3-compatible test server (moto's, from PyPI, in a venv under ~/.cache) on 127.0.0.1 and creates
# a bucket. Source it: it exports what object_store's S3 client and the S3 tests read, and
# S3_TEST_SERVER_PID. Stop the server with `kill "$S3_TEST_SERVER_PID"`.
#   . scripts/s3-test-server.sh [PORT]   (default port 5055; bucket `statebackend-test`)
# Sourced: keep the caller's shell options (restored at the end).
_s3_flags=$-
_s3_pipefail=$([[ -o pipefail ]] && echo -o || echo +o)
set -euo pipefail
port="${1:-5055}"
venv="${STATEBACKEND_MOTO_VENV:-$HOME/.cache/statebackend-moto}"
if [ ! -x "$venv/bin/moto_server" ]; then
  echo "s3-test-server: installing moto[server] into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "moto[server]"
fi
"$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"${TMPDIR:-/tmp}/moto-$port.log" 2>&1 &
S3_TEST_SERVER_PID=$!
# Wait until it answers, then create the bucket (an HTTP PUT of the bucket's name).
"$venv/bin/python" - "$port" <<'PY'
import sys, time, urllib.request
url = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(150):
    try:
        urllib.request.urlopen(url + "/moto-api/", timeout=1)
        break
    except OSError:
        time.sleep(0.2)
urllib.request.urlopen(urllib.request.Request(url + "/statebackend-test", method="PUT"), timeout=5)
PY
export S3_TEST_SERVER_PID
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
export AWS_ENDPOINT="http://127.0.0.1:$port" AWS_ALLOW_HTTP=true
export STATEBACKEND_TEST_S3_URL="s3://statebackend-test/ci"
echo "s3-test-server: moto on $AWS_ENDPOINT (pid $S3_TEST_SERVER_PID), bucket statebackend-test"
case $_s3_flags in *e*) set -e ;; *) set +e ;; esac
case $_s3_flags in *u*) set -u ;; *) set +u ;; esac
set "$_s3_pipefail" pipefail
unset _s3_flags _s3_pipefail
