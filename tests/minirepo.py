"""A small real repository made by the engine's own writers, without any disk or tool: one
image "img" with a head area and a partition area (three chunks and a zero extent each)."""

from __future__ import annotations

import os
from pathlib import Path

import zstandard

from bootmedia.repo.manifest import (
    Area,
    Manifest,
    SourceDisk,
    Stats,
    Table,
    TablePartition,
    image_digest,
)
from bootmedia.repo.maps import MapWriter
from bootmedia.repo.packs import chunk_hash
from bootmedia.repo.store import Repository

CHUNK = 64 << 10


def make_repo(root: Path, name: str = "img") -> tuple[Path, Manifest]:
    """A real repository with one image of two areas (made by the engine's own writers)."""
    repo = Repository.init(root, chunk_size=CHUNK, pack_size=16 << 20, version=1)
    cctx = zstandard.ZstdCompressor()
    with repo:
        tmp = repo.new_image_dir(name)
        writer = repo.chunk_writer()
        areas = []
        for i, area_name in enumerate(("head", "p1")):
            mapw = MapWriter(tmp / f"{area_name}.map")
            for j in range(3):
                data = bytes([i * 16 + j]) * CHUNK if j != 1 else os.urandom(CHUNK)
                digest = chunk_hash(data)
                writer.put(digest, len(data), cctx.compress(data))
                mapw.add(j * CHUNK, CHUNK, digest)
            mapw.add(3 * CHUNK, CHUNK, bytes(32))  # a zero extent
            areas.append(
                Area(
                    area_name,
                    offset=i * 4 * CHUNK,
                    size=4 * CHUNK,
                    mode="raw",
                    number=i,
                    map=mapw.path.name,
                    map_hash=mapw.close(),
                    data_bytes=3 * CHUNK,
                )
            )
        writer.close()
        m = _manifest(name, CHUNK, areas)
        repo.commit_image(tmp, m)
    return root, m


BLOCK = 16 << 10


def make_repo_v2(root: Path, name: str = "img") -> tuple[Path, Manifest]:
    """The same shape in format 2: each area's blocks in one frame of a sealed pack (+ .idx)."""
    repo = Repository.init(root, pack_size=16 << 20)
    assert repo.version == 2
    cctx = zstandard.ZstdCompressor()
    with repo:
        tmp = repo.new_image_dir(name)
        writer = repo.frame_writer()
        areas = []
        for i, area_name in enumerate(("head", "p1")):
            mapw = MapWriter(tmp / f"{area_name}.map")
            blocks, raw = [], b""
            for j in range(3):
                data = bytes([i * 16 + j + 1]) * BLOCK if j != 1 else os.urandom(BLOCK)
                digest = chunk_hash(data)
                blocks.append((digest, len(data)))
                raw += data
                mapw.add(j * BLOCK, BLOCK, digest)
            assert all(writer.claim_new([d for d, _ in blocks]))
            writer.put_frame(blocks, cctx.compress(raw))
            mapw.add(3 * BLOCK, BLOCK, bytes(32))  # a zero extent
            areas.append(
                Area(
                    area_name,
                    offset=i * 4 * BLOCK,
                    size=4 * BLOCK,
                    mode="raw",
                    number=i,
                    map=mapw.path.name,
                    map_hash=mapw.close(),
                    data_bytes=3 * BLOCK,
                )
            )
        writer.close()
        m = _manifest(name, BLOCK, areas)
        repo.commit_image(tmp, m)
    return root, m


def _manifest(name: str, unit: int, areas: list[Area]) -> Manifest:
    table = Table("gpt", "ID", 512, 34, 2000, (TablePartition(1, 512, 512, "L", "U", "p"),))
    return Manifest(
        name=name,
        description="fuzz",
        created="2026-12-01T00:00:00Z",
        tool="test",
        chunk_size=unit,
        source=SourceDisk("/dev/x", "M", "S", 8 * unit, 512, 512),
        table=table,
        areas=tuple(areas),
        stats=Stats(),
        digest=image_digest(table, tuple(areas)),
    )
