"""A fault-injecting HTTP proxy (a thread) in front of the moto S3 server, and request counts.

Point ``AWS_ENDPOINT_URL`` at :attr:`FaultProxy.endpoint`: every request is forwarded to the
upstream server unless a :class:`Fault` matches its path, in which case the proxy answers
``503 Slow Down``-style errors or closes the connection without an answer (``"drop"``: the
request never reaches the server; ``"drop-answer"``: the server handles it, and its answer is
lost, as when a connection breaks after a write; ``"truncate"``: the answer's headers and half
its body arrive, then the connection closes; ``"200-for-206"``: a ``206 Partial Content``
answer goes out as ``200 OK`` with the same headers and bytes, as rclone's ``serve s3`` answers
ranged GETs), for the first ``times`` matching requests
(or always). It counts requests by method and path, so tests can
check how many requests an operation made and how often a request was tried.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass
class Fault:
    """Answer requests whose path contains ``path`` with ``kind`` for the first ``times`` of them (None: always).

    The first ``after`` matching requests pass untouched (not counted in ``hits``).
    """

    path: str
    kind: Literal["503", "drop", "drop-answer", "truncate", "200-for-206"]
    times: int | None = None
    method: str | None = None
    hits: int = 0
    after: int = 0


class FaultProxy:
    """A threaded HTTP/1.1 proxy on 127.0.0.1 forwarding to ``upstream`` (``http://host:port``).

    ``delay`` seconds are waited before each request is forwarded (a network's latency).
    """

    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", int(parts.port or 80))
        self.delay = delay
        self.faults: list[Fault] = []
        self.requests: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return data
                        data += self.rfile.read(size)
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _handle(self) -> None:
                body = self._body()
                path = urlsplit(self.path).path
                fault = proxy._match(self.command, path)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "503":
                    payload = (
                        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
                        b"<Message>injected by the test proxy</Message></Error>"
                    )
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                if proxy.delay:  # a network's round trip, for benchmarks
                    time.sleep(proxy.delay)
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                conn.close()
                if fault == "drop-answer":  # the server did it; the client never hears so
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault == "200-for-206" and answer.status == 206:
                    self.send_response(200, "OK")
                else:
                    self.send_response(answer.status, answer.reason)
                for key, value in answer.getheaders():  # a HEAD answer keeps the object's Content-Length
                    if key.lower() not in _HOP and (key.lower() != "content-length" or self.command == "HEAD"):
                        self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    if fault == "truncate":  # the promised length, half the bytes, then the end
                        self.wfile.write(data[: len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.close()
                        return
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()

    def _match(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests[(method, path)] += 1
            for fault in self.faults:
                matches = fault.path in path and (fault.method is None or fault.method == method)
                if matches and fault.after > 0:
                    fault.after -= 1
                elif matches and (fault.times is None or fault.hits < fault.times):
                    fault.hits += 1
                    return fault.kind
        return None

    def count(self, method: str | None = None, contains: str = "") -> int:
        """Requests seen (faulted ones included) with this method whose path contains ``contains``."""
        with self._lock:
            return sum(n for (m, p), n in self.requests.items() if (method is None or m == method) and contains in p)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
