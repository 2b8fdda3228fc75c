"""A web server that misbehaves on purpose, serving a directory with Range support: it drops
the connection in the middle of a body, answers 404, sends a truncated body, flips a byte, or
ignores Range. Started inside a test's namespace (the socket is made there)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

from tests.net.netns import Netns


@dataclass
class Misbehaviour:
    """What to do to requests for packs (the first `times` of them, or all with times=-1)."""

    # "", "drop", "404", "truncate", "flip", "norange", "500"; and for Range reads:
    # "shortrange" (a 206 naming and sending fewer bytes than asked), "shiftrange" (a 206 for
    # bytes starting one later), "shortlength" (Content-Length and body shorter than the
    # Content-Range it names), "redirect" (a 302 to another server)
    mode: str = ""
    times: int = -1
    min_len: int = 0  # only reads of at least this many bytes (4096: chunk data, not headers)
    done: int = 0
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, path: str, length: int) -> str:
        with self.lock:
            self.requests.append(path)
            if not self.mode or "/packs/" not in path or length < self.min_len:
                return ""
            if self.times >= 0 and self.done >= self.times:
                return ""
            self.done += 1
            return self.mode


def _handler(root: Path, bad: Misbehaviour) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            rel = unquote(self.path.split("?", 1)[0]).lstrip("/")
            path = (root / rel).resolve()
            if path.is_dir():
                path = path / "index.html"
            if root.resolve() not in (path, *path.parents) or not path.is_file():
                return self._send(404, b"not found")
            size = path.stat().st_size
            rng = self.headers.get("Range") or ""
            a, _, b = rng.removeprefix("bytes=").partition("-")
            want = (int(b) - int(a) + 1) if a.isdigit() and b.isdigit() else size
            mode = "" if head else bad.take(self.path, want)
            if mode == "404":
                return self._send(404, b"gone")
            if mode == "500":
                return self._send(500, b"oops")
            if mode == "redirect":
                # Never followed: this address is outside the namespace (and unroutable in it).
                return self._send(302, b"", {"Location": f"http://10.99.99.99{self.path}"})
            start, end, status = 0, size - 1, 200
            if rng and mode != "norange":
                start, end = int(a), min(int(b) if b else size - 1, size - 1)
                if start >= size:
                    return self._send(416, b"", {"Content-Range": f"bytes */{size}"})
                status = 206
            named = [start, end]  # what Content-Range says
            if status == 206 and mode == "shortrange":
                end = named[1] = max(start, end - 100)
            if status == 206 and mode == "shiftrange":
                start = named[0] = start + 1
            if status == 206 and mode == "shortlength":
                end = max(start, end - 100)  # the body stops early, Content-Range does not
            with open(path, "rb") as f:
                f.seek(start)
                body = f.read(end - start + 1)
            headers = {"Content-Length": str(len(body))}
            if status == 206:
                headers["Content-Range"] = f"bytes {named[0]}-{named[1]}/{size}"
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if head:
                return None
            if mode == "drop":  # half the body, then the connection dies
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return None
            if mode == "truncate":  # a short body, and the connection closed as if complete
                self.wfile.write(body[: max(0, len(body) - 7)])
                self.close_connection = True
                return None
            if mode == "flip" and body:
                flipped = bytearray(body)
                flipped[len(flipped) // 2] ^= 0x40
                body = bytes(flipped)
            self.wfile.write(body)
            return None

        def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextmanager
def hostile_server(ns: Netns, root: Path, bad: Misbehaviour, port: int = 8099) -> Iterator[str]:
    with ns.entered():
        server = ThreadingHTTPServer(("127.0.0.1", port), _handler(root, bad))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def listing_dirs(root: Path) -> None:
    """The hostile server has no directory listings: write index pages like a static site."""
    for d, subdirs, files in os.walk(root):
        names = [f"{s}/" for s in subdirs] + files
        links = "".join(f'<a href="{n}">{n}</a>\n' for n in names if n != "index.html")
        (Path(d) / "index.html").write_text(f"<html><body>\n{links}</body></html>\n")
