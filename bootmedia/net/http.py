"""HttpStorage: a repository read over HTTP(S) from any web server, through urllib3.

- Range requests for everything but small files: a pack record is one `Range: bytes=a-b`.
  The answer must be a 206 whose Content-Range names exactly the bytes asked for, and whose body
  is exactly that long; anything else is retried, then refused. (Every record is also checked
  against its BLAKE3 name before a byte of it is written, so a server that lies is caught.)
- Connection reuse: one urllib3 pool per storage (keep-alive), thread-safe, as many connections
  as the engine has reader threads, so parallel requests are the engine's worker threads.
- Retries with exponential backoff on connection errors, resets in the middle of a body, short
  bodies and 5xx/429 answers; a 404 is a missing file at once, never retried.
- Environment proxies are ignored: the repository is fetched from the server named, only.
- https: the certificate must chain to the system's CAs, or only to the CA file given (`ca =`
  in the credentials file), and name the host; a refused certificate is one line, not retried.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
import threading
import time
from html.parser import HTMLParser
from urllib.parse import quote, unquote, urlsplit

import urllib3
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import SSLError as Urllib3SSLError

from bootmedia.repo.storage import MAX_SMALL_FILE, MissingFile, StorageError, check_rel

log = logging.getLogger("bootmedia.net.http")

ATTEMPTS = 5
BACKOFF = 0.2  # seconds before the 2nd attempt; doubles each time
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class _Retry(Exception):
    """A failure worth another attempt."""


class _Links(HTMLParser):
    """The hrefs of a directory listing page (Apache, lighttpd, nginx's HTML autoindex...)."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            for k, v in attrs:
                if k == "href" and v:
                    self.hrefs.append(v)


class HttpStorage:
    """The read side of a repository at an http(s) URL (see bootmedia.repo.storage.Storage)."""

    def __init__(
        self, base: str, connections: int = 8, attempts: int = ATTEMPTS, ca: str | None = None
    ) -> None:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StorageError(f"{base}: not an http(s) URL")
        self.base = base if base.endswith("/") else base + "/"
        self.attempts = max(1, attempts)
        self.ca = ca
        tls: dict[str, ssl.SSLContext] = {}
        if parts.scheme == "https":
            try:
                # cafile: that CA only; None: the system's (hostname checked, TLS 1.2 or later).
                tls["ssl_context"] = ssl.create_default_context(cafile=ca)
            except (OSError, ssl.SSLError) as exc:
                raise StorageError(f"{ca}: not a readable CA certificate file ({exc})") from None
        self.pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=max(1, connections),
            block=True,  # more threads than connections wait for one instead of opening more
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
            retries=False,  # our own loop: it also retries a body cut short
            headers={"User-Agent": "bootmedia", "Accept-Encoding": "identity"},
            **tls,
        )
        self._lock = threading.Lock()
        self.requests = 0
        self.retried = 0
        self.bytes = 0

    def describe(self) -> str:
        return self.base

    def url(self, rel: str) -> str:
        rel = check_rel(rel)
        return self.base + ("" if rel == "." else quote(rel))

    # ---- one request, with retries -------------------------------------------------------

    def _request(
        self,
        method: str,
        rel: str,
        headers: dict[str, str] | None = None,
        limit: int = 0,
        directory: bool = False,
    ) -> tuple[int, dict[str, str], bytes]:
        url = self.url(rel)
        if directory and not url.endswith("/"):
            url += "/"
        last = ""
        for attempt in range(self.attempts):
            if attempt:
                self._backoff(attempt, method, url, last)
            try:
                return self._once(method, url, rel, headers or {}, limit)
            except _Retry as exc:
                last = str(exc)
        raise StorageError(f"{url}: {last} (gave up after {self.attempts} attempts)")

    def _backoff(self, attempt: int, method: str, url: str, why: str) -> None:
        with self._lock:
            self.retried += 1
        log.warning("%s %s: %s; retry %d of %d", method, url, why, attempt, self.attempts - 1)
        time.sleep(BACKOFF * (2 ** (attempt - 1)))

    def _once(
        self, method: str, url: str, rel: str, headers: dict[str, str], limit: int
    ) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            self.requests += 1
        try:
            resp = self.pool.request(
                method, url, headers=headers, preload_content=False, redirect=False
            )
        except Urllib3SSLError as exc:  # the same certificate again would be refused again
            trusted = (
                f"the CA in {self.ca}"
                if self.ca
                else "the system's CAs (or give ca = in the credentials file)"
            )
            raise StorageError(
                f"{url}: the server's certificate is refused ({_tls_reason(exc)}); "
                f"it must name the host and chain to {trusted}"
            ) from None
        except Urllib3Error as exc:
            raise _Retry(f"cannot connect ({_reason(exc)})") from None
        ok = False
        try:
            status = resp.status
            hdrs = {k.lower(): v for k, v in resp.headers.items()}
            if status == 404 or status == 410:
                raise MissingFile(f"{url}: {rel} is missing (HTTP {status})")
            if status >= 500 or status == 429:
                raise _Retry(f"server error HTTP {status}")
            if status in (301, 302, 303, 307, 308):
                raise StorageError(
                    f"{url}: the server redirects to {hdrs.get('location', '?')}: "
                    "name that address instead"
                )
            if status not in (200, 206):
                raise StorageError(f"{url}: HTTP {status} {resp.reason or ''}".rstrip())
            if method == "HEAD":
                ok = True
                return status, hdrs, b""
            declared = hdrs.get("content-length")
            if declared is not None and not declared.isdigit():
                raise _Retry(f"bad Content-Length {declared!r}")
            if limit and declared is not None and int(declared) > limit:
                raise StorageError(f"{url}: {rel} is too big ({declared} bytes)")
            try:
                body = resp.read(limit + 1 if limit else None)
            except Urllib3Error as exc:
                raise _Retry(_cut_short(exc)) from None
            if limit and len(body) > limit:
                raise StorageError(f"{url}: {rel} is too big (over {limit} bytes)")
            if declared is not None and len(body) != int(declared):
                raise _Retry(f"body cut short ({len(body)} of {declared} bytes)")
            with self._lock:
                self.bytes += len(body)
            ok = True
            return status, hdrs, body
        finally:
            if ok:
                resp.release_conn()
            else:  # an error page or a broken body: never hand this connection to another read
                resp.close()
                resp.release_conn()

    # ---- the Storage interface -----------------------------------------------------------

    def read_bytes(self, rel: str, limit: int = MAX_SMALL_FILE) -> bytes:
        _, _, body = self._request("GET", rel, limit=limit)
        return body

    def pread(self, rel: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise StorageError(f"{self.base}: bad read of {rel} at {offset} ({length} bytes)")
        if length == 0:
            return b""
        url = self.url(rel)
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        last = ""
        for attempt in range(self.attempts):
            if attempt:
                self._backoff(attempt, "GET", url, last)
            try:
                status, hdrs, body = self._once("GET", url, rel, headers, 0)
            except _Retry as exc:
                last = str(exc)
                continue
            except StorageError as exc:
                if isinstance(exc, MissingFile) or "HTTP 416" not in str(exc):
                    raise
                return b""  # the range starts at or after the end: like pread at EOF
            if status != 206:
                raise StorageError(
                    f"{url}: the server ignores Range requests (answered {status} to "
                    "a partial read); bootmedia needs a server that honours them"
                )
            got = _CONTENT_RANGE.match(hdrs.get("content-range", ""))
            if not got or int(got[1]) != offset:
                last = f"wrong Content-Range {hdrs.get('content-range')!r} for bytes {offset}-"
                continue
            start, end = int(got[1]), int(got[2])
            total = int(got[3]) if got[3] != "*" else None
            want = length if total is None else max(0, min(offset + length, total) - offset)
            if end - start + 1 != want or len(body) != want:
                last = f"short range ({len(body)} of {want} bytes)"
                continue
            return body
        raise StorageError(f"{url}: {last} (gave up after {self.attempts} attempts)")

    def size(self, rel: str) -> int:
        _, hdrs, _ = self._request("HEAD", rel)
        length = hdrs.get("content-length", "")
        if not length.isdigit():
            raise StorageError(f"{self.url(rel)}: the server gives no size (Content-Length)")
        return int(length)

    def exists(self, rel: str) -> bool:
        try:
            self._request("HEAD", rel)
        except MissingFile:
            return False
        return True

    def listdir(self, rel: str) -> list[str]:
        """Names in a directory, from the server's listing page: nginx's JSON autoindex, or the
        links of an HTML listing. A server without listings cannot serve a repository."""
        try:
            _, hdrs, body = self._request("GET", rel, limit=64 << 20, directory=True)
        except StorageError as exc:
            if "HTTP 403" in str(exc):
                raise StorageError(
                    f"{self.url(rel)}/: the server does not list directories (nginx: autoindex on)"
                ) from None
            raise
        ctype = hdrs.get("content-type", "")
        names: list[str] = []
        if "json" in ctype:
            try:
                entries = json.loads(body)
                names = [str(e["name"]) for e in entries if isinstance(e, dict) and "name" in e]
            except (ValueError, TypeError, KeyError):
                raise StorageError(f"{self.url(rel)}/: unreadable directory listing") from None
        else:
            parser = _Links()
            parser.feed(body.decode("utf-8", errors="replace"))
            for href in parser.hrefs:
                if "?" in href or "#" in href or href.startswith(("/", "..")) or "://" in href:
                    continue
                name = unquote(href.rstrip("/"))
                if name and "/" not in name and name not in (".", ".."):
                    names.append(name)
        return sorted(set(names))

    def close(self) -> None:
        self.pool.clear()


def _cut_short(exc: Exception) -> str:
    for arg in (exc, *getattr(exc, "args", ())):
        partial, expected = getattr(arg, "partial", None), getattr(arg, "expected", None)
        if partial is not None and expected is not None:
            got = partial if isinstance(partial, int) else len(partial)
            return f"body cut short: the connection dropped after {got} of {got + expected} bytes"
    return f"body cut short: the connection dropped ({_reason(exc)})"


def _tls_reason(exc: Exception) -> str:
    """OpenSSL's words: 'certificate verify failed: self-signed certificate'."""
    text = _reason(exc)
    m = re.search(r"certificate verify failed: ([^(]+)", text)
    return f"certificate verify failed: {m[1].strip()}" if m else text


def _reason(exc: Exception) -> str:
    inner = getattr(exc, "reason", None)
    text = str(inner or exc)
    return text.split(": ", 1)[-1] if "Max retries" in text else text
