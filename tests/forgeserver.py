"""A local HTTP server that records the API calls Ephemera makes to a forge.

Used only for GitHub and GitLab, whose real servers cannot be reached from the machines
the tests run on; Gitea's calls go to a real Gitea (tests/gitea.py). It answers like the
forge's documented API: 201 with an ``id`` for a created comment or note, 201 for a
commit status, 200 for an edit. ``fail_next`` makes the next calls answer 502.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: dict


@dataclass
class RecordingForge:
    url: str = ""
    calls: list[Call] = field(default_factory=list)
    fail_next: int = 0
    ids: itertools.count = field(default_factory=lambda: itertools.count(1001))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self, method: str | None = None) -> list[str]:
        return [c.path for c in self.calls if method is None or c.method == method]


def start(forge: RecordingForge) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            with forge.lock:
                failing = forge.fail_next > 0
                if failing:
                    forge.fail_next -= 1
                else:
                    forge.calls.append(
                        Call(
                            self.command,
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            json.loads(raw or b"{}"),
                        )
                    )
                new_id = next(forge.ids)
            if failing:
                self._send(502, {"message": "Bad gateway"})
            elif self.command == "POST":
                self._send(201, {"id": new_id})
            else:
                self._send(200, {"id": new_id})

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_POST = do_PATCH = do_PUT = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    forge.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
