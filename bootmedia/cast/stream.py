"""The multicast stream: the image's own format, each chunk once, with its checksums.

    header   "BMCAST\\0\\1" | u32 length | JSON | u32 CRC-32 of the JSON
             JSON: image name, the manifest and every extent map (base64, byte for byte as in
             the repository, so their BLAKE3 hashes still check), chunk count, stored bytes
    records  exactly a pack record: "BMCR" | BLAKE3 | raw length | stored length | flags | CRC,
             then the zstd frame; in the order the disk needs them, each distinct chunk once
    trailer  "BMCEND\\0\\1" | u32 record count

A record is only used after its payload decompresses and hashes to its name. A stream cut short
(a receiver dropped by the sender) is still good up to where it stops, and one joined in the
middle (an async session, `cast --late-join`: it starts at some udpcast slice, inside a record)
is good from its first whole record: the receiver fetches the rest from the fallback
repository. Garbage inside the stream (a slice udpcast lost and gave up on, with
--ignore-lost-data) is skipped by resynchronising on the next valid record header.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from bootmedia.errors import ImageError
from bootmedia.repo.manifest import Manifest
from bootmedia.repo.packs import RECORD_MAGIC, RECORD_SIZE, Record, parse_record_header
from bootmedia.repo.store import Repository

STREAM_MAGIC = b"BMCAST\x00\x01"
END_MAGIC = b"BMCEND\x00\x01"
MAX_HEADER = 512 << 20
MAX_PAYLOAD = 256 << 20


@dataclass(frozen=True)
class StreamHeader:
    image: str
    manifest: bytes
    maps: dict[str, bytes]
    chunks: int
    stored_bytes: int

    def encode(self) -> bytes:
        doc = {
            "image": self.image,
            "manifest": base64.b64encode(self.manifest).decode(),
            "maps": {k: base64.b64encode(v).decode() for k, v in self.maps.items()},
            "chunks": self.chunks,
            "stored_bytes": self.stored_bytes,
        }
        body = json.dumps(doc).encode()
        return (
            STREAM_MAGIC + struct.pack("<I", len(body)) + body + struct.pack("<I", zlib.crc32(body))
        )


def image_header(repo: Repository, m: Manifest, chunks: int, stored_bytes: int) -> StreamHeader:
    """The header for image m as the repository holds it (manifest and maps byte for byte)."""
    return StreamHeader(
        image=m.name,
        manifest=repo.storage.read_bytes(f"images/{m.name}/manifest.json"),
        maps={a.map: repo.storage.read_bytes(f"images/{m.name}/{a.map}") for a in m.areas if a.map},
        chunks=chunks,
        stored_bytes=stored_bytes,
    )


@dataclass(frozen=True)
class Midstream:
    """The stream did not start with a header: udp-receiver joined an async session after its
    start. `prefix` is what was read looking for the header: the start of the rest."""

    prefix: bytes


def _read_exact(f: IO[bytes], n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        got = f.read(n - len(out))
        if not got:
            break
        out += got
    return bytes(out)


def read_header(f: IO[bytes]) -> StreamHeader | Midstream | None:
    """The stream's header; None when the stream is empty (no session, or an acknowledged
    session that had started: udpcast takes no late receiver there); Midstream when it starts
    elsewhere (joined an async session late). A damaged header is an ImageError."""
    magic = _read_exact(f, len(STREAM_MAGIC))
    if not magic:
        return None
    if magic != STREAM_MAGIC:
        return Midstream(magic)
    (length,) = struct.unpack("<I", _read_exact(f, 4).rjust(4, b"\xff"))
    if length > MAX_HEADER:
        raise ImageError("the multicast stream's header is too big")
    body = _read_exact(f, length)
    crc = _read_exact(f, 4)
    if len(body) != length or len(crc) != 4 or zlib.crc32(body) != struct.unpack("<I", crc)[0]:
        raise ImageError("the multicast stream's header is damaged")
    try:
        doc = json.loads(body)
        return StreamHeader(
            image=str(doc["image"]),
            manifest=base64.b64decode(doc["manifest"], validate=True),
            maps={str(k): base64.b64decode(v, validate=True) for k, v in doc["maps"].items()},
            chunks=int(doc["chunks"]),
            stored_bytes=int(doc["stored_bytes"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ImageError("the multicast stream's header is damaged") from None


def records(
    f: IO[bytes], stats: dict[str, int], prefix: bytes = b""
) -> Iterator[tuple[Record, bytes]]:
    """(record, payload) for each intact-looking record until the trailer or the end, the
    stream starting with prefix (already read from f). Damage is skipped up to the next valid
    header; stats counts 'skipped' bytes and 'complete' (1 when the trailer arrived with the
    right count)."""
    buf = bytearray(prefix)
    eof = False
    seen = 0

    def fill(n: int) -> bool:
        nonlocal eof
        while len(buf) < n and not eof:
            got = f.read(max(n - len(buf), 1 << 20))
            if not got:
                eof = True
            buf.extend(got)
        return len(buf) >= n

    while True:
        # The trailer (12 bytes) is shorter than a record header: look for it first.
        fill(len(END_MAGIC) + 4)
        if buf[: len(END_MAGIC)] == END_MAGIC and len(buf) >= len(END_MAGIC) + 4:
            (count,) = struct.unpack("<I", bytes(buf[len(END_MAGIC) : len(END_MAGIC) + 4]))
            stats["complete"] = int(count == seen)
            return
        if not fill(RECORD_SIZE):
            if buf:
                stats["skipped"] = stats.get("skipped", 0) + len(buf)
            return
        rec = parse_record_header(bytes(buf[:RECORD_SIZE]), 0)
        if rec is None or rec.stored_len > MAX_PAYLOAD:
            # Resynchronise on the next record magic.
            nxt = buf.find(RECORD_MAGIC, 1)
            end = buf.find(END_MAGIC, 1)
            cut = min(x for x in (nxt, end, len(buf)) if x > 0)
            stats["skipped"] = stats.get("skipped", 0) + cut
            del buf[:cut]
            continue
        if not fill(RECORD_SIZE + rec.stored_len):
            stats["skipped"] = stats.get("skipped", 0) + len(buf)
            return
        payload = bytes(buf[RECORD_SIZE : RECORD_SIZE + rec.stored_len])
        del buf[: RECORD_SIZE + rec.stored_len]
        seen += 1
        yield rec, payload
