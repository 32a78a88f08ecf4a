"""A slow tracking server for tests: an HTTP proxy on 127.0.0.1 that waits `delay_s` before
forwarding each request to an MLflow server (and answers 502 while that server is down)."""

from __future__ import annotations

import contextlib
import http.client
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


def _handler(target_port: int, delay_s: float) -> type[BaseHTTPRequestHandler]:
    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            time.sleep(delay_s)
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
def throttled(target_port: int, port: int, delay_s: float) -> Iterator[str]:
    """A proxy on 127.0.0.1:`port` to the MLflow server on `target_port`; yields its URI."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(target_port, delay_s))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
