#!/usr/bin/env python3
"""An HTTP proxy in front of the S3 test server that makes deletes ambiguous, as S3 does: a fraction of
the delete requests (bulk `POST ?delete` and single `DELETE`) is forwarded and applied, and then the answer
is held back longer than the client waits, so the client sees a timeout for a delete that took effect.
Everything else passes through unchanged. Standard library only.

usage: fault-proxy.py LISTEN_PORT UPSTREAM_URL [--rate 0.05] [--hold-seconds 12] [--seed 7]
Prints one line per held-back delete and, on SIGTERM, a summary line.
"""
import argparse
import http.client
import http.server
import random
import signal
import sys
import threading
import time
import urllib.parse

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("upstream")
parser.add_argument("--rate", type=float, default=0.05)
parser.add_argument("--hold-seconds", type=float, default=12.0)
parser.add_argument("--seed", type=int, default=7)
args = parser.parse_args()
upstream = urllib.parse.urlsplit(args.upstream)
rng = random.Random(args.seed)
lock = threading.Lock()
counts = {"requests": 0, "deletes": 0, "held": 0}


def read_body(handler):
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return body
            body += handler.rfile.read(size)
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length", "0") or 0)
    return handler.rfile.read(length) if length else b""


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):  # quiet
        pass

    def forward(self):
        body = read_body(self)
        query = urllib.parse.urlsplit(self.path).query
        is_delete = self.command == "DELETE" or (
            self.command == "POST" and "delete" in urllib.parse.parse_qs(query, keep_blank_values=True)
        )
        with lock:
            counts["requests"] += 1
            hold = False
            if is_delete:
                counts["deletes"] += 1
                hold = rng.random() < args.rate
                if hold:
                    counts["held"] += 1
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection")}
        headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if hold:
            # Applied upstream; the client hears nothing before its timeout.
            print(f"fault-proxy: holding back the answer to {self.command} {self.path} ({resp.status})", flush=True)
            time.sleep(args.hold_seconds)
        try:
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward


server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Proxy)
server.daemon_threads = True


def stop(*_):
    print(
        f"fault-proxy: {counts['requests']} requests, {counts['deletes']} deletes, "
        f"{counts['held']} held back past the client's timeout",
        flush=True,
    )
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
print(f"fault-proxy: 127.0.0.1:{args.port} -> {args.upstream}, {args.rate:.0%} of deletes held {args.hold_seconds}s", flush=True)
server.serve_forever()
