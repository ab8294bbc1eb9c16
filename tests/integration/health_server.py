"""A stand-in for a feature's runner: a real HTTP server answering ``GET /health`` as told.

    python health_server.py MODE [PORT]      MODE: ok | loading | foreign

It binds 127.0.0.1 (PORT, or a free one), prints the bound port on one line, and serves until
terminated. ``ok`` answers 200 like the service base, ``loading`` 503, ``foreign`` 404 as any
other web server would.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

ANSWERS = {
    "ok": (200, {"status": "ok", "model_loaded": True}),
    "loading": (503, {"status": "loading", "model_loaded": False}),
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        mode = self.server.mode  # type: ignore[attr-defined]
        if self.path != "/health" or mode not in ANSWERS:
            self.send_error(404)
            return
        status, document = ANSWERS[mode]
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    mode = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server = HTTPServer(("127.0.0.1", port), Handler)
    server.mode = mode  # type: ignore[attr-defined]
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
