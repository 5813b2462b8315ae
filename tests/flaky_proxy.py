"""A fault-injecting HTTP/1.1 reverse proxy for the tests: the tool talks to it instead of
the S3 server, and it forwards each request unchanged (request line, Host header and body
byte for byte, so SigV4 signatures stay valid) unless its seeded dice say to misbehave.

Faults, drawn once per request with the rates given:

``drop``      close the connection before forwarding (the server never sees the request)
``cut``       forward, then send only part of the response (half the body, or part of
              the status line when there is no body) and close: the server did the
              work, the client cannot know it
``reset``     like ``cut``, but end the connection with a TCP reset instead of a close
``error500``  answer ``500 InternalError`` (S3 XML error body) without forwarding
``slowdown``  answer ``503 SlowDown`` (S3 XML error body) without forwarding
``stall``     forward, send the first part of the response (as ``cut`` does), hold the
              rest ``stall_seconds`` (longer than the client's read timeout), then send it

``choose(request)``, if given, picks the fault (or None) for a request before the dice, under
the proxy's lock: a test can aim at one operation. Each client connection carries one
request; every response says ``Connection: close``.
Standard library only, loopback only, every loop and wait bounded.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional
from urllib.parse import urlsplit

KINDS = ("drop", "cut", "reset", "error500", "slowdown", "stall")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_HEAD_BYTES = 64 * 1024           # request line or status line plus headers
MAX_HEAD_LINES = 200
MAX_BODY_BYTES = 256 * 1024 * 1024   # one request or response body
MAX_CHUNKS = 1_000_000               # chunks in one chunked body
MAX_INTERIM = 5                      # 1xx responses skipped before the real one
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class HttpError(Exception):
    """The peer sent something this proxy cannot frame."""


@dataclass
class Message:
    """One HTTP message: its first line and header lines as received, and its raw body."""

    start: bytes                       # request line or status line, without CRLF
    headers: list[tuple[bytes, bytes]]  # (name, value) with the original spelling
    raw_head: bytes                    # start line and headers exactly as received
    body: bytes = b""                  # exactly as received (chunk framing included)

    def header(self, name: bytes) -> Optional[bytes]:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value.strip()
        return None

    @property
    def method(self) -> bytes:
        return self.start.split(b" ", 1)[0].upper()

    @property
    def target(self) -> bytes:
        parts = self.start.split(b" ")
        return parts[1] if len(parts) > 1 else b"/"

    @property
    def status(self) -> int:
        parts = self.start.split(b" ")
        if len(parts) < 2 or not parts[1].isdigit():
            raise HttpError(f"bad status line {self.start[:80]!r}")
        return int(parts[1])


# ------------------------------------------------------------------------ reading messages

def _line(reader: BinaryIO, budget: int) -> bytes:
    line = reader.readline(budget + 1)
    if not line:
        raise HttpError("connection closed")
    if len(line) > budget or not line.endswith(b"\n"):
        raise HttpError("line too long or cut short")
    return line


def read_head(reader: BinaryIO) -> Message:
    """The start line and headers, up to and including the empty line."""
    raw = bytearray()
    for _ in range(MAX_HEAD_LINES):
        line = _line(reader, MAX_HEAD_BYTES - len(raw))
        raw += line
        if line in (b"\r\n", b"\n"):
            break
    else:
        raise HttpError("too many header lines")
    lines = bytes(raw).split(b"\r\n") if b"\r\n" in raw else bytes(raw).split(b"\n")
    headers = []
    for text in lines[1:]:
        if text:
            name, colon, value = text.partition(b":")
            if not colon:
                raise HttpError(f"bad header line {text[:80]!r}")
            headers.append((name.strip(), value))
    return Message(lines[0], headers, bytes(raw))


def _read_exactly(reader: BinaryIO, count: int) -> bytes:
    if count > MAX_BODY_BYTES:
        raise HttpError(f"body of {count} bytes is too large")
    data = reader.read(count)
    if len(data) != count:
        raise HttpError(f"body cut short: {len(data)} of {count} bytes")
    return data


def _read_chunked(reader: BinaryIO) -> bytes:
    """A chunked body, raw: size lines, data, the last chunk and the trailers."""
    raw = bytearray()
    for _ in range(MAX_CHUNKS):
        size_line = _line(reader, 1024)
        raw += size_line
        size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
        if size == 0:
            break
        raw += _read_exactly(reader, size + 2)
        if len(raw) > MAX_BODY_BYTES:
            raise HttpError("chunked body too large")
    else:
        raise HttpError("too many chunks")
    for _ in range(MAX_HEAD_LINES):          # trailers, then the empty line
        line = _line(reader, MAX_HEAD_BYTES)
        raw += line
        if line in (b"\r\n", b"\n"):
            return bytes(raw)
    raise HttpError("too many trailer lines")


def _read_to_close(reader: BinaryIO) -> bytes:
    data = reader.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES:
        raise HttpError("body too large")
    return data


def read_body(reader: BinaryIO, message: Message, is_request: bool) -> bytes:
    """The raw body that follows ``message``'s head, framed as RFC 9112 says."""
    encoding = message.header(b"transfer-encoding")
    if encoding is not None and encoding.lower().endswith(b"chunked"):
        return _read_chunked(reader)
    length = message.header(b"content-length")
    if length is not None:
        if not length.isdigit():
            raise HttpError(f"bad Content-Length {length[:40]!r}")
        return _read_exactly(reader, int(length))
    return b"" if is_request else _read_to_close(reader)


def read_request(reader: BinaryIO, conn: socket.socket) -> Message:
    """One whole request; answers ``Expect: 100-continue`` itself before reading the body."""
    request = read_head(reader)
    expect = request.header(b"expect")
    if expect is not None and expect.lower() == b"100-continue":
        conn.sendall(CONTINUE)
    request.body = read_body(reader, request, is_request=True)
    return request


def response_has_body(method: bytes, status: int) -> bool:
    return method != b"HEAD" and not (100 <= status < 200 or status in (204, 304))


def read_response(reader: BinaryIO, method: bytes) -> Message:
    """The final response to a ``method`` request; interim 1xx answers are skipped."""
    for _ in range(MAX_INTERIM):
        response = read_head(reader)
        status = response.status
        if 100 <= status < 200 and status != 101:
            continue
        if response_has_body(method, status):
            response.body = read_body(reader, response, is_request=False)
        return response
    raise HttpError("too many interim responses")


# ------------------------------------------------------------------------ writing responses

def closing_head(response: Message) -> bytes:
    """``response``'s head with ``Connection: close`` in place of its own connection headers."""
    lines = [response.start]
    for name, value in response.headers:
        if name.lower() not in (b"connection", b"keep-alive"):
            lines.append(name + b":" + value)
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def s3_error(status: int, reason: str, code: str, message: str, request: Message) -> bytes:
    """A complete S3-style error response (no body for HEAD, as HTTP requires)."""
    request_id = uuid.uuid4().hex[:16].upper()
    resource = request.target.decode("latin-1").split("?", 1)[0]
    xml = ('<?xml version="1.0" encoding="UTF-8"?>\n'
           f"<Error><Code>{code}</Code><Message>{message}</Message>"
           f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>")
    body = xml.encode() if request.method != b"HEAD" else b""
    head = (f"HTTP/1.1 {status} {reason}\r\n"
            "Content-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"x-amz-request-id: {request_id}\r\n"
            "Server: flaky-proxy\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


def cut_point(head: bytes, body: bytes) -> int:
    """Where a ``cut`` stops: halfway through the body or, with no body, inside the status
    line (HTTP clients take headers cut short by the end of the connection as complete)."""
    return len(head) + len(body) // 2 if body else head.index(b" ") + 3


# ------------------------------------------------------------------------ the proxy

class FlakyProxy:
    """``with FlakyProxy(upstream_url, rates={"drop": 0.1}, seed=1) as proxy:`` then point the
    client at ``proxy.endpoint_url``; ``proxy.counts`` says what was injected."""

    def __init__(self, upstream_url: str, rates: Optional[dict[str, float]] = None,
                 seed: int = 0, stall_seconds: float = 3.0, io_timeout: float = 30.0,
                 max_connections: int = 32,
                 choose: Optional[Callable[[Message], Optional[str]]] = None):
        parts = urlsplit(upstream_url)
        if parts.scheme != "http" or parts.hostname not in LOOPBACK or not parts.port:
            raise ValueError(f"upstream must be http://127.0.0.1:PORT, not {upstream_url!r}")
        self.upstream = (parts.hostname, parts.port)
        self.stall_seconds = stall_seconds
        self.choose = choose          # picks a fault for a request before the dice do
        self.io_timeout = io_timeout
        self._rates: dict[str, float] = {}
        self.set_rates(**(rates or {}))
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(max_connections)
        self._handlers: set[threading.Thread] = set()
        self._open: set[socket.socket] = set()
        self._listener: Optional[socket.socket] = None
        self._acceptor: Optional[threading.Thread] = None
        self.endpoint_url = ""

    # ---------------------------------------------------------------- configuration, counts
    def set_rates(self, **rates: float) -> None:
        """Replace the fault rates (kinds left out become 0); they must add up to at most 1."""
        unknown = set(rates) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {KINDS}")
        if any(r < 0 for r in rates.values()) or sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError(f"rates must be >= 0 and add up to <= 1: {rates}")
        self._rates = {kind: float(rates.get(kind, 0.0)) for kind in KINDS}

    @property
    def counts(self) -> dict[str, int]:
        """How many requests arrived ("requests") and how many of each fault were injected."""
        with self._lock:
            return {"requests": self._counts["requests"],
                    **{kind: self._counts[kind] for kind in KINDS},
                    "upstream_errors": self._counts["upstream_errors"]}

    @property
    def injected(self) -> int:
        counts = self.counts
        return sum(counts[kind] for kind in KINDS)

    def _draw(self, request: Message) -> Optional[str]:
        """Count one request and pick its fault (None: forward it faithfully)."""
        with self._lock:
            self._counts["requests"] += 1
            chosen = self.choose(request) if self.choose else None
            if chosen is not None:
                if chosen not in KINDS:
                    raise ValueError(f"choose() returned {chosen!r}; known: {KINDS}")
                self._counts[chosen] += 1
                return chosen
            roll = self._rng.random()
            for kind in KINDS:
                roll -= self._rates[kind]
                if roll < 0:
                    self._counts[kind] += 1
                    return kind
            return None

    def _count(self, what: str) -> None:
        with self._lock:
            self._counts[what] += 1

    # ---------------------------------------------------------------- start and stop
    def __enter__(self) -> "FlakyProxy":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        self.endpoint_url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        self._acceptor = threading.Thread(target=self._accept_loop, name="flaky-proxy",
                                          daemon=True)
        self._acceptor.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, break open connections, wait (bounded) for the handlers."""
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            sockets, handlers = list(self._open), list(self._handlers)
        for sock in sockets:
            _shutdown(sock)
        for thread in handlers:
            thread.join(timeout)

    # ---------------------------------------------------------------- serving
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=0.2):
                continue
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, OSError):
                self._slots.release()
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self._handlers.add(thread)
                self._open.add(conn)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        reset = False
        try:
            conn.settimeout(self.io_timeout)
            with conn.makefile("rb") as reader:
                reset = self._handle(conn, reader)
        except (OSError, HttpError, ValueError):
            pass                      # the client went away or spoke nonsense: just close
        finally:
            if reset:                 # RST instead of FIN: unread data is lost
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                _shutdown(conn)
            conn.close()
            with self._lock:
                self._open.discard(conn)
                self._handlers.discard(threading.current_thread())
            self._slots.release()

    def _handle(self, conn: socket.socket, reader: BinaryIO) -> bool:
        """Serve one request with its fault; True if the connection must end with a reset."""
        request = read_request(reader, conn)
        fault = self._draw(request)
        if fault == "drop":
            return False
        if fault == "error500":
            conn.sendall(s3_error(500, "Internal Server Error", "InternalError",
                                  "We encountered an internal error. Please try again.",
                                  request))
            return False
        if fault == "slowdown":
            conn.sendall(s3_error(503, "Slow Down", "SlowDown",
                                  "Please reduce your request rate.", request))
            return False
        try:
            response = self._forward(request)
        except (OSError, HttpError):
            self._count("upstream_errors")
            return False
        head = closing_head(response)
        whole, half = head + response.body, cut_point(head, response.body)
        if fault in ("cut", "reset", "stall"):
            conn.sendall(whole[:half])
        if fault == "stall":
            self._stopping.wait(self.stall_seconds)
            conn.sendall(whole[half:])
        elif fault is None:
            conn.sendall(whole)
        return fault == "reset"

    def _forward(self, request: Message) -> Message:
        """Send ``request`` byte for byte to the server on a fresh connection; its answer."""
        with socket.create_connection(self.upstream, timeout=self.io_timeout) as upstream:
            upstream.sendall(request.raw_head + request.body)
            with upstream.makefile("rb") as reader:
                return read_response(reader, request.method)


def _shutdown(sock: socket.socket) -> None:
    """Really end the connection, even if a forked child still holds a copy of the socket."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
