"""Property-based fuzzing of the repository's readers (issue 8): manifests, extent maps, pack
records and the chunk index (format 1), frame records and .idx files (format 2), fed arbitrary bytes and structured mutations of valid files. Every
outcome must be a correct result or a clean BootmediaError, never another exception.

CI runs FUZZ_EXAMPLES examples per reader (default 150, well under a minute in all);
scripts/fuzz.sh runs the long version (e.g. `scripts/fuzz.sh 20000`).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import shutil
import sqlite3
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import blake3
import pytest
import zstandard
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bootmedia.errors import BootmediaError
from bootmedia.repo.idx import parse_idx
from bootmedia.repo.manifest import (
    Manifest,
    _canonical,
    dump_manifest,
    parse_manifest,
)
from bootmedia.repo.maps import ENTRY, MAP_MAGIC, read_map
from bootmedia.repo.packs import (
    PACK_HEADER,
    RECORD_SIZE,
    chunk_hash,
    decode,
    parse_frame,
    parse_record_header,
    read_pack_header,
    scan_pack,
)
from bootmedia.repo.store import Repository
from tests.minirepo import make_repo, make_repo_v2

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    # FUZZ_SHRINK=0: report the first failure as found (a long run's shrinking can take hours).
    phases=[Phase.explicit, Phase.generate]
    if os.environ.get("FUZZ_SHRINK") == "0"
    else [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# ---------------------------------------------------------------- a small valid repository


@pytest.fixture(scope="module")
def valid_repo(tmp_path_factory) -> tuple[Path, Manifest]:
    return make_repo(tmp_path_factory.mktemp("fuzz") / "repo")


@pytest.fixture
def scratch(valid_repo, tmp_path: Path) -> Path:
    """A fresh copy of the valid repository for each test function (examples reuse it and put
    back the one file they damage)."""
    dst = tmp_path / "repo"
    shutil.copytree(valid_repo[0], dst)
    return dst


# ---------------------------------------------------------------- mutations


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _mutate(doc: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


@st.composite
def mutated_manifest(draw: st.DrawFn, m: Manifest) -> bytes:
    """A valid manifest with one to three fields replaced, removed or retyped; re-signed (most
    of the time) so the reader's type and range checks, not the checksum, must catch it."""
    envelope = json.loads(dump_manifest(m))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(envelope)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete"])) if path else "replace"
        value = draw(
            st.one_of(
                json_value,
                st.integers(-(2**64), 2**64),
                st.sampled_from(["", "..", "../x", "/etc/passwd", "a/b", "img", "x" * 300]),
            )
        )
        envelope = _mutate(envelope, path, action, value)
    if isinstance(envelope, dict) and "manifest" in envelope and draw(st.booleans()):
        envelope["blake3"] = blake3.blake3(_canonical(envelope["manifest"])).hexdigest()
    try:
        return json.dumps(envelope).encode()
    except (TypeError, ValueError):
        return b"{}"


def _flip(data: bytes, draw: Callable[[st.SearchStrategy[Any]], Any]) -> bytes:
    """Flip, overwrite, cut or extend a valid file's bytes."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "write", "truncate", "extend", "int"]))
        # Positions are drawn independently of the length so that a replay draws the same.
        pos = draw(st.integers(0, 1 << 24)) % max(1, len(buf))
        if how == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif how == "write":
            chunk = draw(st.binary(min_size=1, max_size=16))
            buf[pos : pos + len(chunk)] = chunk
        elif how == "truncate":
            del buf[pos:]
        elif how == "extend":
            buf += draw(st.binary(max_size=64))
        elif how == "int" and len(buf) >= pos + 4:
            value = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 20]))
            buf[pos : pos + 4] = struct.pack("<I", value)
    return bytes(buf)


# ---------------------------------------------------------------- manifests


def _check_manifest(data: bytes, where: str = "img") -> None:
    try:
        m = parse_manifest(data, where)
    except BootmediaError as exc:
        assert str(exc).startswith(f"image {where}:"), exc
        assert "\n" not in str(exc)
        return
    # A manifest that reads is a consistent one.
    assert isinstance(m, Manifest) and m.name == where
    for a in m.areas:
        assert a.offset >= 0 and a.size >= 0
        assert "/" not in a.map and ".." not in a.map
    m.required_size  # noqa: B018 - computing it must not fail


@FUZZ
@given(st.binary(max_size=2048))
def test_manifest_arbitrary_bytes(data: bytes) -> None:
    _check_manifest(data)


@FUZZ
@given(st.data())
def test_manifest_structured_mutations(valid_repo, data: st.DataObject) -> None:
    _check_manifest(data.draw(mutated_manifest(valid_repo[1])))


@FUZZ
@given(st.data())
def test_manifest_byte_mutations(valid_repo, data: st.DataObject) -> None:
    _check_manifest(_flip(dump_manifest(valid_repo[1]), data.draw))


# ---------------------------------------------------------------- extent maps


def _check_map_file(path: Path, repo_dir: Path | None = None) -> None:
    try:
        extents = list(read_map(path))
    except BootmediaError:
        return
    for e in extents:
        assert e.offset >= 0 and e.length >= 0 and len(e.hash) == 32


@FUZZ
@given(st.binary(max_size=1024))
def test_map_arbitrary_bytes(tmp_path_factory, data: bytes) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-arbitrary.map"
    path.write_bytes(data)
    _check_map_file(path)


@FUZZ
@given(st.data())
def test_map_mutations_through_the_repository(scratch: Path, data: st.DataObject) -> None:
    """A damaged map behind a manifest: extents() either yields entries or refuses; with its
    hash re-signed into the manifest the structural checks alone must hold."""
    map_path = scratch / "images" / "img" / "p1.map"
    manifest_path = scratch / "images" / "img" / "manifest.json"
    good = map_path.read_bytes()
    original = manifest_path.read_bytes()
    # Every draw comes before the first write: hypothesis may stop an example inside a draw,
    # and the files must be restored for the next one (or the draws stop being reproducible).
    damaged = _flip(good, data.draw)
    if data.draw(st.booleans()) and len(damaged) >= len(MAP_MAGIC):
        damaged = MAP_MAGIC + damaged[len(MAP_MAGIC) :]
    resign = data.draw(st.booleans())
    map_path.write_bytes(damaged)
    if resign:
        env = json.loads(original)
        for a in env["manifest"]["areas"]:
            if a["name"] == "p1":
                a["map_hash"] = blake3.blake3(damaged).hexdigest()
        env["blake3"] = blake3.blake3(_canonical(env["manifest"])).hexdigest()
        manifest_path.write_text(json.dumps(env))
    try:
        with Repository.open(scratch) as repo:
            m = repo.image("img")
            try:
                extents = list(repo.extents(m, "p1"))
            except BootmediaError:
                extents = None
        if extents is not None:
            assert damaged == good or resign
            assert (len(damaged) - len(MAP_MAGIC)) == len(extents) * ENTRY.size
    finally:
        map_path.write_bytes(good)
        manifest_path.write_bytes(original)


# ---------------------------------------------------------------- pack records


def _pack_of(repo_dir: Path) -> Path:
    return next((repo_dir / "packs").glob("pack-*.bmp"))


@FUZZ
@given(st.binary(max_size=RECORD_SIZE + 64), st.integers(0, 1 << 40))
def test_record_header_arbitrary_bytes(data: bytes, offset: int) -> None:
    dctx = zstandard.ZstdDecompressor()
    rec = parse_record_header(data[:RECORD_SIZE], offset)
    if rec is None:
        return
    try:
        out = decode(rec, data[RECORD_SIZE:], dctx)
    except BootmediaError:
        return
    assert len(out) == rec.raw_len and chunk_hash(out) == rec.hash


@FUZZ
@given(st.data())
def test_pack_mutations_scan_and_read(scratch: Path, data: st.DataObject) -> None:
    """A damaged pack: the scan yields only records that decode to their hash; the reader
    (through the index) gives the right bytes or refuses."""
    pack = _pack_of(scratch)
    good = pack.read_bytes()
    damaged = _flip(good, data.draw)
    pack.write_bytes(damaged)
    dctx = zstandard.ZstdDecompressor()
    try:
        with contextlib.suppress(BootmediaError):
            read_pack_header(pack)
        for rec in scan_pack(pack, verify=True):
            payload = damaged[rec.offset : rec.end]
            assert chunk_hash(decode(rec, payload, dctx)) == rec.hash
        with Repository.open(scratch) as repo:
            m = repo.image("img")
            for area in m.areas:
                for e in repo.extents(m, area.name):
                    if e.is_zero:
                        continue
                    loc = repo.locate(e.hash)
                    assert loc is not None
                    try:
                        out = decode(loc.record(e.hash), repo.read_payload(loc, e.hash), dctx)
                    except BootmediaError:
                        continue
                    assert chunk_hash(out) == e.hash
    finally:
        pack.write_bytes(good)


# ---------------------------------------------------------------- the chunk index


@settings(FUZZ, phases=[Phase.explicit, Phase.generate])  # no shrinking while it fails
@given(st.data())
def test_index_mutations(scratch: Path, data: st.DataObject) -> None:
    """A damaged index.sqlite (a cache): opening and locating either works with correct
    locations or ends in a BootmediaError."""
    index = scratch / "index.sqlite"
    good = index.read_bytes()
    kind = data.draw(st.sampled_from(["bytes", "rows"]))
    if kind == "bytes":
        index.write_bytes(_flip(good, data.draw))
    else:
        db = sqlite3.connect(index)
        column = data.draw(st.sampled_from(["offset", "stored_len", "raw_len", "flags", "pack"]))
        value = data.draw(st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=8)))
        db.execute(f"UPDATE chunks SET {column}=?", (value,))
        db.commit()
        db.close()
    dctx = zstandard.ZstdDecompressor()
    try:
        with Repository.open(scratch) as repo:
            m = repo.image("img")
            for area in m.areas:
                for e in repo.extents(m, area.name):
                    if e.is_zero:
                        continue
                    loc = repo.locate(e.hash)
                    if loc is None:
                        continue
                    try:
                        out = decode(loc.record(e.hash), repo.read_payload(loc, e.hash), dctx)
                    except BootmediaError:
                        continue
                    assert chunk_hash(out) == e.hash
    except BootmediaError:
        pass
    finally:
        index.write_bytes(good)
        for extra in ("index.sqlite-journal", "index.sqlite-wal"):
            (scratch / extra).unlink(missing_ok=True)


def test_the_fixture_is_valid(valid_repo) -> None:
    root, m = valid_repo
    with Repository.open(root) as repo:
        assert repo.image("img") == m
        assert len(list(repo.extents(m, "p1"))) == 4
    assert PACK_HEADER.size == 24


# ---------------------------------------------------------------- format 2: frames and .idx


@pytest.fixture(scope="module")
def valid_repo_v2(tmp_path_factory) -> tuple[Path, Manifest]:
    return make_repo_v2(tmp_path_factory.mktemp("fuzz2") / "repo")


@pytest.fixture
def scratch_v2(valid_repo_v2, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the format-2 repository, with its own index cache directory (the cache is
    keyed by the repository's uuid, which the copy shares)."""
    monkeypatch.setenv("BOOTMEDIA_CACHE_DIR", str(tmp_path / "cache"))
    dst = tmp_path / "repo"
    shutil.copytree(valid_repo_v2[0], dst)
    return dst


def _read_every_block(root: Path) -> None:
    """Open the repository and read every block of "img": each one read must be right."""
    dctx = zstandard.ZstdDecompressor()
    buf = memoryview(mmap.mmap(-1, 1 << 20))
    try:
        with Repository.open(root) as repo:
            m = repo.image("img")
            for area in m.areas:
                for e in repo.extents(m, area.name):
                    if e.is_zero:
                        continue
                    loc = repo.locate(e.hash)
                    if loc is None:
                        continue
                    # apply's path too: the frame decompressed into an aligned buffer
                    with contextlib.suppress(BootmediaError):
                        view = repo.read_frame_into(loc, dctx, buf)
                        block = view[loc.in_frame : loc.in_frame + loc.raw_len]
                        assert len(block) <= loc.raw_len
                    try:
                        out = repo.read_block(loc, e.hash, dctx)
                    except BootmediaError:
                        continue
                    assert chunk_hash(out) == e.hash
    except BootmediaError:
        pass


@FUZZ
@given(st.binary(max_size=4096), st.integers(0, 1 << 40))
def test_frame_header_arbitrary_bytes(buf: bytes, offset: int) -> None:
    frame = parse_frame(buf, offset)
    assert frame is None or frame.offset == offset


@FUZZ
@given(st.binary(max_size=4096))
def test_idx_arbitrary_bytes(buf: bytes) -> None:
    with contextlib.suppress(BootmediaError):
        parse_idx(buf, "fuzz.idx")


@FUZZ
@given(st.data())
def test_v2_pack_and_idx_mutations(scratch_v2: Path, data: st.DataObject) -> None:
    """A damaged pack or .idx of format 2, read through the repository (index cache rebuilt
    from the .idx, frames parsed, blocks hashed): a right block or a BootmediaError."""
    packs = sorted((scratch_v2 / "packs").iterdir())
    target = data.draw(st.sampled_from(packs))
    good = target.read_bytes()
    target.write_bytes(_flip(good, data.draw))
    cache = Path(os.environ["BOOTMEDIA_CACHE_DIR"])
    try:
        _read_every_block(scratch_v2)
    finally:
        target.write_bytes(good)
        shutil.rmtree(cache, ignore_errors=True)
