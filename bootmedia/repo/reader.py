"""PackReader: the one way jobs read stored chunks (apply, verify, and whatever reads next).

with PackReader(repo) as packs:
    data = packs.chunk(digest)          # decompressed and checked against its hash
    data = packs.chunk(digest, loc)     # when the caller already located it

Safe to share between threads: every read is a pread through the repository's storage, and
each thread keeps its own zstd decompressor.
"""

from __future__ import annotations

import threading
from types import TracebackType

import zstandard

from bootmedia.errors import ImageError
from bootmedia.repo.store import Location, Repository


class PackReader:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self._local = threading.local()

    def locate(self, digest: bytes) -> Location | None:
        return self.repo.locate(digest)

    def payload(self, loc: Location, digest: bytes) -> bytes:
        """The stored (compressed) bytes of one chunk, after checking its record header. Read
        through the repository's storage (local, or HTTP), which keeps the packs open."""
        return self.repo.read_payload(loc, digest)

    def chunk(self, digest: bytes, loc: Location | None = None) -> bytes:
        """The chunk named digest, decompressed and checked. ImageError says what is wrong
        (missing, damaged header, does not decompress, checksum mismatch) and where."""
        if loc is None:
            loc = self.locate(digest)
            if loc is None:
                raise ImageError(f"chunk {digest.hex()[:16]} is missing from the repository")
        try:
            return self.repo.read_block(loc, digest, self._dctx())
        except OSError as exc:
            raise ImageError(f"cannot read pack {loc.pack}: {exc.strerror}") from None

    def frame(self, loc: Location) -> bytes:
        """The decompressed frame (format 2) holding the block at loc; the caller checks the
        hashes of the blocks it takes from it."""
        try:
            return self.repo.read_frame(loc, self._dctx())[1]
        except OSError as exc:
            raise ImageError(f"cannot read pack {loc.pack}: {exc.strerror}") from None

    def frame_into(self, loc: Location, out: memoryview) -> memoryview:
        """frame(), decompressed into the caller's buffer; a view of out."""
        try:
            return self.repo.read_frame_into(loc, self._dctx(), out)
        except OSError as exc:
            raise ImageError(f"cannot read pack {loc.pack}: {exc.strerror}") from None

    def _dctx(self) -> zstandard.ZstdDecompressor:
        dctx = getattr(self._local, "dctx", None)
        if dctx is None:
            dctx = self._local.dctx = zstandard.ZstdDecompressor()
        return dctx

    def close(self) -> None:
        """The storage owns the open packs; they close with the repository."""

    def __enter__(self) -> PackReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
