"""A real HTTP server on loopback that records every request: where the tests point health
check pings and webhooks (``ping_server``), and a port where nothing listens (``closed_url``).

Each test gets its own server on a free port. It answers 200, or the status a test sets for a
path in ``answers``, after ``stall`` seconds when a test wants a slow server.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Dict, List

import pytest


@dataclass
class Request:
    method: str
    path: str          # without the query
    query: str
    headers: Dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body.decode("utf-8"))


class PingServer:
    """The server of one test: ``url(path)`` to reach it, ``requests`` in arrival order."""

    def __init__(self):
        self.requests: List[Request] = []
        self.answers: Dict[str, int] = {}
        self.stall = 0.0
        self._lock = threading.Lock()
        self._released = threading.Event()     # ends every stall at teardown
        self.httpd = _Server(("127.0.0.1", 0), self._handler())
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def seen(self) -> List[tuple]:
        """(method, path) of every request so far."""
        with self._lock:
            return [(r.method, r.path) for r in self.requests]

    def close(self) -> None:
        self._released.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urllib.parse.urlsplit(self.path)
                with server._lock:
                    server.requests.append(Request(self.command, parts.path, parts.query,
                                                   dict(self.headers.items()), body))
                if server.stall:
                    server._released.wait(server.stall)
                status = server.answers.get(parts.path, 200)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = do_HEAD = do_PUT = _record

            def log_message(self, *args):      # the test's output stays the tool's
                pass

        return Handler


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass        # a client that gave up on a stalled answer is what the test wanted


@pytest.fixture
def ping_server(monkeypatch):
    """A recording HTTP server on 127.0.0.1 (a proxy set in the environment is bypassed)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = PingServer()
    yield server
    server.close()


@pytest.fixture
def closed_url(monkeypatch):
    """A URL on 127.0.0.1 where nothing listens: every request is refused at once.  The
    port stays bound (not listening) for the test, so no other process takes it meanwhile
    (tests run in parallel)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/ping/c1osed-k3y"
