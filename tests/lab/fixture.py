#!/usr/bin/env python3
"""HTTP fixture for routewatch's lab: one process per systemd test unit.

    fixture.py --port N [--bind 127.0.0.1] --mode healthy|hang|429

healthy  GET /health -> 200 {"status":"healthy"}; any other path -> 200 "ok".
hang     every request is accepted and never answered (the handler thread
         waits forever); the listening socket keeps accepting connections.
         This is the "PID alive, port open, HTTP dead" signature.
429      every request -> 429 Too Many Requests with Retry-After: 0.

GET /control/hang answers 200 and then switches the process into hang mode.
GET /control/deadlock answers 200 and then stops accepting connections
altogether (the accept loop blocks forever, the listening socket stays open):
the accept queue fills up and the kernel drops further SYNs, so clients see a
connect that never completes. This is the deadlock seen from the wire.
The mode lives in memory only, so a restarted process starts in its
command-line mode again.

Nothing is written per request (it would only spam the journal).
"""
import argparse
import faulthandler
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("healthy", "hang", "429")


class State:
    def __init__(self, mode):
        self.lock = threading.Lock()
        self.mode = mode

    def get(self):
        with self.lock:
            return self.mode

    def set(self, mode):
        with self.lock:
            self.mode = mode


STATE = State("healthy")
FOREVER = threading.Event()  # never set: hung handlers wait on it
SERVER = []  # the one server, for /control/deadlock


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "routewatch-lab-fixture/1"

    def log_message(self, format, *args):  # noqa: A002 - signature of the base class
        pass

    def log_request(self, code="-", size="-"):
        pass

    def _reply(self, code, body, content_type="text/plain", headers=None):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def _handle(self):
        mode = STATE.get()
        path = self.path.split("?", 1)[0]
        if mode == "hang":
            FOREVER.wait()
            return
        if path == "/control/deadlock":
            self._reply(200, "deadlocked from now on\n")
            # Stop the accept loop (from this handler thread); main() then blocks forever
            # with the socket still listening.
            threading.Thread(target=SERVER[0].shutdown, daemon=True).start()
            return
        if path == "/control/hang":
            self._reply(200, "hanging from now on\n")
            STATE.set("hang")
            return
        if mode == "429":
            self._reply(429, "too many requests\n", headers={"Retry-After": "0"})
            return
        if path == "/health":
            self._reply(200, json.dumps({"status": "healthy"}, separators=(",", ":")), "application/json")
        else:
            self._reply(200, "ok\n")

    do_GET = _handle
    do_HEAD = _handle
    do_POST = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        pass  # client went away (timeouts are the point here): stay quiet


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--mode", choices=MODES, default="healthy")
    args = ap.parse_args()
    # As a service would to be debuggable: SIGQUIT prints every thread's stack to stderr
    # (the journal) and the process carries on.
    faulthandler.register(signal.SIGQUIT, all_threads=True)
    STATE.set(args.mode)
    srv = Server((args.bind, args.port), Handler)
    SERVER.append(srv)
    print(f"fixture: listening on {args.bind}:{args.port} mode={args.mode}", file=sys.stderr, flush=True)
    srv.serve_forever()
    # Only after /control/deadlock: never accept again, never exit.
    FOREVER.wait()


if __name__ == "__main__":
    main()
