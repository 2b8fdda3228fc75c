"""The multicast stream format (bootmedia.cast.stream): header round trip, damaged headers
refused, garbage and cuts inside the stream skipped up to the next valid record."""

from __future__ import annotations

import io
import os

import pytest
import zstandard

from bootmedia.cast.stream import END_MAGIC, Midstream, StreamHeader, read_header, records
from bootmedia.errors import ImageError
from bootmedia.repo.packs import FLAG_ZSTD, chunk_hash, decode, pack_record_header


def _record(data: bytes) -> tuple[bytes, bytes]:
    payload = zstandard.ZstdCompressor().compress(data)
    digest = chunk_hash(data)
    return digest, pack_record_header(digest, len(data), len(payload), FLAG_ZSTD) + payload


def _stream(chunks: list[bytes], garbage_after: int | None = None, cut: int = 0) -> bytes:
    header = StreamHeader(
        "golden", b'{"name": "golden"}', {"p1.map": b"MAP\x00" * 10}, len(chunks), 0
    )
    body = bytearray(header.encode())
    for i, c in enumerate(chunks):
        body += _record(c)[1]
        if garbage_after == i:
            body += os.urandom(5000) + b"BMCR" + os.urandom(100)  # even a fake magic
    body += END_MAGIC + len(chunks).to_bytes(4, "little")
    return bytes(body[: len(body) - cut])


def test_header_round_trip_and_every_record() -> None:
    chunks = [os.urandom(1000) * (i + 1) for i in range(5)]
    f = io.BytesIO(_stream(chunks))
    h = read_header(f)
    assert (
        isinstance(h, StreamHeader)
        and h.image == "golden"
        and h.maps == {"p1.map": b"MAP\x00" * 10}
    )
    stats: dict[str, int] = {}
    got = [decode(rec, payload, zstandard.ZstdDecompressor()) for rec, payload in records(f, stats)]
    assert got == chunks and stats.get("complete") == 1 and not stats.get("skipped")


def test_garbage_inside_the_stream_is_skipped_to_the_next_record() -> None:
    chunks = [os.urandom(3000) for _ in range(4)]
    f = io.BytesIO(_stream(chunks, garbage_after=1))
    assert read_header(f) is not None
    stats: dict[str, int] = {}
    got = [rec.hash for rec, _ in records(f, stats)]
    assert got == [chunk_hash(c) for c in chunks]
    assert stats["skipped"] >= 5000


def test_a_cut_stream_gives_what_arrived_and_says_incomplete() -> None:
    chunks = [os.urandom(3000) for _ in range(4)]
    f = io.BytesIO(_stream(chunks, cut=2000))  # the trailer and part of the last record lost
    assert read_header(f) is not None
    stats: dict[str, int] = {}
    got = [rec.hash for rec, _ in records(f, stats)]
    assert got == [chunk_hash(c) for c in chunks[:3]]
    assert not stats.get("complete")


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:20] + bytes([b[20] ^ 1]) + b[21:],  # inside the JSON: CRC mismatch
        lambda b: b[:8] + (2**31).to_bytes(4, "little") + b[12:],  # absurd length
        lambda b: b[:30],  # cut inside the header
    ],
)
def test_damaged_headers_are_refused(damage) -> None:
    data = damage(_stream([b"x" * 100]))
    with pytest.raises(ImageError):
        read_header(io.BytesIO(data))


def test_an_empty_stream_is_no_session() -> None:
    assert read_header(io.BytesIO(b"")) is None


@pytest.mark.parametrize("join_at", [0, 3, 40, 1000])  # bytes into the second record
def test_a_stream_joined_in_the_middle_gives_every_whole_record_after_the_join(
    join_at: int,
) -> None:
    """An async session joined late (cast --late-join): udp-receiver's output starts at some
    udpcast slice, anywhere inside a record. The header is missing (Midstream, with the bytes
    read looking for it), and every record after the join point arrives whole."""
    chunks = [os.urandom(3000) for _ in range(5)]
    whole = _stream(chunks)
    header = StreamHeader("golden", b'{"name": "golden"}', {"p1.map": b"MAP\x00" * 10}, 5, 0)
    second = len(header.encode()) + len(_record(chunks[0])[1])
    f = io.BytesIO(whole[second + join_at :])
    joined = read_header(f)
    assert isinstance(joined, Midstream) and len(joined.prefix) == 8
    stats: dict[str, int] = {}
    got = [rec.hash for rec, _ in records(f, stats, joined.prefix)]
    want = chunks[1:] if join_at == 0 else chunks[2:]
    assert got == [chunk_hash(c) for c in want]
    assert stats.get("skipped", 0) == (0 if join_at == 0 else len(_record(chunks[1])[1]) - join_at)
    assert not stats.get("complete")  # the trailer's count names records it never saw
