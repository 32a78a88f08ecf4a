"""A slow tracking server for tests: an HTTP proxy on 127.0.0.1 that waits `delay_s` (which the
test may change at any time) before forwarding each request to an MLflow server, and answers
502 while that server is down."""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


class Proxy(ThreadingHTTPServer):
    """The proxy's server: its URI, and the delay before each request is forwarded."""

    daemon_threads = True

    def __init__(self, target_port: int, port: int, delay_s: float) -> None:
        super().__init__(("127.0.0.1", port), _handler(self, target_port))
        self.uri = f"http://127.0.0.1:{port}"
        self.delay_s = delay_s

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that hung up (a killed sweep) is no error here."""


def _handler(proxy: Proxy, target_port: int) -> type[BaseHTTPRequestHandler]:
    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            time.sleep(proxy.delay_s)
            try:
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                payload = response.read()
                status, reply = response.status, response.getheaders()
                upstream.close()
            except OSError:
                status, reply, payload = 502, [], b"upstream MLflow server is down"
            self.send_response(status)
            for key, value in reply:
                if key.lower() not in HOP_HEADERS:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, *args: object) -> None:
            """Quiet."""

    return Forward


@contextlib.contextmanager
def throttled(target_port: int, port: int, delay_s: float) -> Iterator[Proxy]:
    """A proxy on 127.0.0.1:`port` to the MLflow server on `target_port`."""
    proxy = Proxy(target_port, port, delay_s)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.shutdown()
        proxy.server_close()
