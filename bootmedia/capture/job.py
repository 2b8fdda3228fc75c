"""The capture job: read the planned chunks, hash and compress them in a pool, store them in order."""

from __future__ import annotations

import errno
import functools
import logging
import mmap
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import zstandard

from bootmedia import __version__, blockdev
from bootmedia.capture.plan import AreaPlan, CapturePlan
from bootmedia.errors import BootmediaError
from bootmedia.fs import min_size
from bootmedia.pipeline import OrderedPool
from bootmedia.progress import Reporter, human_bytes
from bootmedia.repo.manifest import (
    RAW,
    USED,
    Area,
    Manifest,
    Stats,
    image_digest,
)
from bootmedia.repo.maps import ENTRY, ZERO_HASH, MapWriter
from bootmedia.repo.packs import FLAG_ZSTD, chunk_hash, frame_header
from bootmedia.repo.store import FrameWriter, Repository
from bootmedia.scratch import Scratch, new_scratch

log = logging.getLogger("bootmedia.capture")

IN_FLIGHT = 64 << 20  # bytes of frames queued between the reader and the writer


@dataclass(frozen=True)
class CaptureResult:
    name: str
    repo: Path
    data_bytes: int
    stored_bytes: int
    new_bytes: int
    seconds: float
    digest: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.data_bytes / self.seconds if self.seconds else 0.0


# ---- the copy loop ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    """About frame_size bytes of one area, aligned to the area start: the worker that gets it
    reads the used pieces itself (so several reads are in flight and reading overlaps with
    compressing), hashes every block holding a used byte, and compresses the new ones."""

    base: int  # the area's offset on the disk
    offset: int  # the frame's offset within the area
    span: int  # bytes from offset to the end of the last block
    pieces: tuple[tuple[int, int], ...]  # (offset in frame, length) to read; the rest is zeros
    blocks: tuple[tuple[int, int], ...]  # (offset in frame, length) of blocks with a used byte
    raw: bool = False  # every byte is read: nothing to zero first

    @property
    def read(self) -> int:
        return sum(n for _, n in self.pieces)


def _read_exact(fd: int, view: memoryview, pos: int) -> None:
    while view:
        n = os.preadv(fd, [view], pos)
        if n == 0:
            raise BootmediaError(f"unexpected end of disk at byte {pos}")
        view, pos = view[n:], pos + n


def _iter_used(plan: AreaPlan, block: int, frame: int) -> Iterator[_Frame]:
    """Frames holding the area's used ranges. Blocks are aligned to the area start; blocks
    without a used byte are left out (holes), unused bytes in a block read as zeros, so equal
    content gives an equal block whatever was in the free space."""
    area, ranges = plan.area, plan.ranges
    assert ranges is not None
    cur = -1
    pieces: list[tuple[int, int]] = []
    blocks: list[tuple[int, int]] = []

    def build() -> _Frame:
        off = cur * frame
        last = blocks[-1]
        return _Frame(area.offset, off, last[0] + last[1], tuple(pieces), tuple(blocks))

    for i in range(0, len(ranges), 2):
        s, n = ranges[i], ranges[i + 1]
        while n > 0:
            fi = s // frame
            take = min(n, (fi + 1) * frame - s)
            if fi != cur:
                if pieces:
                    yield build()
                cur, pieces, blocks = fi, [], []
            rel = s - fi * frame
            if pieces and pieces[-1][0] + pieces[-1][1] == rel:
                pieces[-1] = (pieces[-1][0], pieces[-1][1] + take)
            else:
                pieces.append((rel, take))
            first, last = rel // block, (rel + take - 1) // block
            for b in range(first, last + 1):
                if not blocks or blocks[-1][0] < b * block:
                    length = min(block, area.size - fi * frame - b * block)
                    blocks.append((b * block, length))
            s, n = s + take, n - take
    if pieces:
        yield build()


def _iter_raw(area: Area, block: int, frame: int) -> Iterator[_Frame]:
    for off in range(0, area.size, frame):
        span = min(frame, area.size - off)
        blocks = tuple((b, min(block, span - b)) for b in range(0, span, block))
        yield _Frame(area.offset, off, span, ((0, span),), blocks, raw=True)


@dataclass(frozen=True)
class _FrameResult:
    """What a worker made of a frame: everything the ordered writer does with it is a few
    calls per frame, none per block (the writer is the one serial part)."""

    mapped: bytes  # the frame's map entries, packed (ENTRY after ENTRY)
    count: int  # how many entries
    data: int  # bytes in non-zero blocks
    # Blocks the repository had before this capture: hash and share (format 1: every block
    # this frame does not store, share None: asked at the end)
    seen: list[tuple[bytes, int | None]]
    new: list[tuple[bytes, int]]  # the blocks to store: hash, length
    payload: bytes | None  # their zstd frame
    head: bytes | None = None  # its record header (format 2)


ALIGN = 4096  # O_DIRECT reads: offsets, lengths and memory aligned to this


class _Worker:
    """Hash each block, ask which are new, compress only those, together.

    Reads bypass the page cache (O_DIRECT) straight into one page-aligned mmap buffer per
    worker, reused for every frame, with no copy: whole 4 KiB-aligned spans land in place and
    only the gaps inside used blocks are zeroed (_zero_gaps). Without O_DIRECT (a filesystem
    that refuses it, an unaligned end) reads are buffered, into the same buffer."""

    def __init__(
        self,
        fd: int,
        level: int,
        writer: FrameWriter,
        block: int,
        frame: int,
        dfd: int = -1,
        size: int = 0,
    ) -> None:
        self.fd = fd
        self.dfd = dfd
        self.size = size
        self.level = level
        self.writer = writer
        self.frame = frame
        self.zeros = bytes(frame)
        self.zero_block = bytes(block)
        self.local = threading.local()
        self.v2 = writer.version == 2

    def _buffer(self) -> tuple[mmap.mmap, memoryview, zstandard.ZstdCompressor]:
        """This worker's page-aligned frame buffer (reused for every frame) and compressor."""
        local = self.local
        mm = getattr(local, "mm", None)
        if mm is None:
            mm = local.mm = mmap.mmap(-1, self.frame + 2 * ALIGN)
            local.mmv = memoryview(mm)
            local.cctx = zstandard.ZstdCompressor(level=self.level, write_checksum=True)
        return mm, local.mmv, local.cctx

    def _read(self, f: _Frame, mmv: memoryview, pad: int) -> None:
        """The frame's used pieces into mmv[pad:], where pad puts the frame's start at its
        offset from the last 4 KiB boundary of the disk: O_DIRECT reads of whole aligned
        spans land in place, with no copy. What else they bring in (stale bytes beside the
        pieces) is zeroed by _zero_gaps."""
        origin = f.base + f.offset
        if self.dfd < 0:
            for a, n in f.pieces:
                _read_exact(self.fd, mmv[pad + a : pad + a + n], origin + a)
            return
        spans: list[list[int]] = []
        for a, n in f.pieces:
            s = (origin + a) & ~(ALIGN - 1)
            e = -(-(origin + a + n) // ALIGN) * ALIGN
            if spans and s <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], e)
            else:
                spans.append([s, e])
        for s, e in spans:
            lo, hi = s - origin + pad, e - origin + pad
            if e > self.size:  # the disk ends unaligned: buffered
                _read_exact(self.fd, mmv[lo : lo + self.size - s], s)
                continue
            try:
                _read_exact(self.dfd, mmv[lo:hi], s)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.dfd = -1  # refused after all: buffered from now on
                _read_exact(self.fd, mmv[lo:hi], s)

    def _zero_gaps(self, f: _Frame, mmv: memoryview, pad: int) -> None:
        """Zero every byte of a used block that is not in a used piece (stale data read
        beside a piece, or left from the previous frame), so equal content gives an equal
        block whatever the free space held. Blocks without a used byte are not stored, so
        only the edges of each gap need it."""
        bs, zeros = len(self.zero_block), memoryview(self.zeros)
        pos = 0
        for a, n in (*f.pieces, (f.span, 0)):
            if a > pos:  # a gap [pos, a)
                head_end = min(a, -(-pos // bs) * bs)  # to the end of pos's block
                if head_end > pos:
                    mmv[pad + pos : pad + head_end] = zeros[: head_end - pos]
                tail = max(head_end, a // bs * bs)  # from the start of a's block
                if a > tail and a < f.span:
                    mmv[pad + tail : pad + a] = zeros[: a - tail]
            pos = a + n

    def __call__(self, f: _Frame) -> _FrameResult:
        mm, mmv, cctx = self._buffer()
        pad = (f.base + f.offset) % ALIGN
        self._read(f, mmv, pad)
        if not f.raw:
            self._zero_gaps(f, mmv, pad)
        zero, bs, base = self.zero_block, len(self.zero_block), f.offset
        pack, find = ENTRY.pack, mm.find
        entries: list[bytes] = []
        hashed: list[tuple[int, int, bytes]] = []
        for off, n in f.blocks:
            at = pad + off
            # find() of a block of zeros where the block starts: a memcmp on the buffer
            # itself, no copy
            if find(zero if n == bs else zero[:n], at, at + n) == at:
                entries.append(pack(base + off, n, ZERO_HASH))
                continue
            digest = chunk_hash(mmv[at : at + n])
            entries.append(pack(base + off, n, digest))
            hashed.append((off, n, digest))
        mapped = b"".join(entries)
        if not hashed:
            return _FrameResult(mapped, len(entries), 0, [], [], None)
        claims = self.writer.claim([h[2] for h in hashed])
        seen: list[tuple[bytes, int | None]] = []
        stored: list[tuple[bytes, int]] = []
        data = pos = 0
        v2 = self.v2
        for (off, n, digest), claim in zip(hashed, claims, strict=True):
            data += n
            if claim < 0:  # new: move it to the front of the buffer, beside the others
                if pos != off:
                    mmv[pad + pos : pad + pos + n] = mmv[pad + off : pad + off + n]
                stored.append((digest, n))
                pos += n
            elif claim > 0:
                seen.append((digest, claim))
            elif not v2:  # format 1: known before, or stored by this capture: asked later
                seen.append((digest, None))
            # format 2, claim 0: this capture stores it, and counts it where it does
        if not stored:
            return _FrameResult(mapped, len(entries), data, seen, [], None)
        payload = cctx.compress(mmv[pad : pad + pos])
        head = frame_header(stored, len(payload), FLAG_ZSTD) if v2 else None
        return _FrameResult(mapped, len(entries), data, seen, stored, payload, head)


@functools.cache
def _insert_sql(rows: int) -> str:
    return "INSERT OR IGNORE INTO s VALUES" + ",".join(["(?,?)"] * rows)


class _Tally:
    """The image's statistics: how many distinct blocks it has, and their share of the
    stored bytes, in memory bounded whatever the disk's size.

    A block this capture stores is counted where it is stored: its claim made it this
    capture's only copy (format 2). The blocks the repository had before can come up many
    times, so they go through a set of hashes; past LIMIT hashes the set moves to a scratch
    database on this machine (never the repository's disk), in sorted batches."""

    LIMIT = 1 << 17  # hashes held in memory (about 18 MB)

    def __init__(self, directory: Path | None = None) -> None:
        self.chunks = 0
        self.stored = 0
        self.rows: dict[bytes, int | None] = {}
        self._db: sqlite3.Connection | None = None
        self._spilled = False
        if directory is not None:  # made now, so a job's scratch looks the same all along
            self._db = self._connect(directory / "seen.sqlite")

    def count(self, shares: list[tuple[bytes, int]]) -> None:
        """Blocks this capture stored, each once."""
        self.chunks += len(shares)
        self.stored += sum(s for _, s in shares)

    def add(self, rows: Sequence[tuple[bytes, int | None]]) -> None:
        """Blocks that may come up again (share None: asked at the end)."""
        self.rows.update(rows)
        if len(self.rows) >= self.LIMIT:
            self._spill()

    @staticmethod
    def _connect(path: Path | str) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")  # scratch: a crash discards it anyway
        db.execute("CREATE TABLE s(h BLOB PRIMARY KEY, share INTEGER) WITHOUT ROWID")
        db.execute("BEGIN")
        return db

    def _spill(self) -> None:
        if self._db is None:  # no scratch directory given: in memory after all
            self._db = self._connect(":memory:")
        self._spilled = True
        items = sorted(self.rows.items())  # keys are unique: only hashes are compared
        for i in range(0, len(items), 400):  # under SQLite's parameter limit
            part = items[i : i + 400]
            self._db.execute(_insert_sql(len(part)), [v for kv in part for v in kv])
        self.rows = {}

    def totals(self, share: Callable[[bytes], int]) -> tuple[int, int]:
        """(distinct blocks, their stored bytes); `share` answers for the ones asked late."""
        if not self._spilled:
            rows = self.rows
            late = sum(share(d) for d, s in rows.items() if s is None)
            return self.chunks + len(rows), self.stored + late + sum(s for s in rows.values() if s)
        self._spill()
        db = self._db
        assert db is not None
        late = sum(share(r[0]) for r in db.execute("SELECT h FROM s WHERE share IS NULL"))
        chunks, stored = db.execute("SELECT count(*), total(share) FROM s").fetchone()
        return self.chunks + chunks, self.stored + int(stored) + late

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _prefetch(path: Path | None) -> None:
    """Ask the kernel to read the index cache in the background, in order: every frame asks
    it which blocks are known, and from a cold cache each of those asks would otherwise wait
    for a few random reads of its own (a recapture finds every block there)."""
    if path is None:
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # an in-memory cache, or none yet: nothing to read
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


def capture_image(plan: CapturePlan, reporter: Reporter | None = None) -> CaptureResult:
    """Run a capture plan. The image is listed only once its manifest is committed; a failed or
    cancelled capture lists nothing, and the chunks it stored are reused by the next attempt."""
    reporter = reporter or Reporter()
    started = time.monotonic()
    reporter.add_total(plan.total_bytes)
    warning = plan.space_warning()
    if warning:
        reporter.message(warning)
    repo = Repository.init(plan.repo)
    tmp: Path | None = None
    writer = None
    fd = dfd = -1
    tally = _Tally()
    scratch: Scratch | None = None
    try:
        tmp = repo.new_image_dir(plan.name)
        writer = repo.frame_writer()
        _prefetch(repo.cache.path if repo.version == 2 else None)
        # This job's scratch directory on this machine (never the repository's disk): the
        # statistics' set of known blocks moves there when it outgrows memory. A killed job's
        # is swept by the next job.
        scratch = new_scratch("capture", say=reporter.message)
        tally = _Tally(Path(scratch.name))
        v2 = writer.version == 2
        fd = blockdev.open_device(plan.source)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        try:
            dfd = os.open(plan.source, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError:
            dfd = -1  # a filesystem without O_DIRECT (tmpfs): buffered reads
        block, frame = repo.block_size, repo.frame_size
        # How small each filesystem could shrink (ntfsresize takes seconds on a big NTFS): asked
        # in the background while the data is read, and only needed for the manifest.
        sizer = ThreadPoolExecutor(1, thread_name_prefix="bm-minsize")
        min_sizes = {
            a.area.name: sizer.submit(min_size, a.device, a.area.fstype)
            for a in plan.areas
            if a.area.mode == USED
        }
        sizer.shutdown(wait=False)
        # Twice as many workers as cores: while one waits for the disk, another compresses.
        # Work in flight is bounded in bytes: at most IN_FLIGHT of frames queued.
        workers = plan.threads * 2
        pool = OrderedPool(
            _Worker(fd, plan.level, writer, block, frame, dfd, plan.disk.size),
            workers,
            depth=max(workers + 1, IN_FLIGHT // frame),
        )
        areas: list[Area] = []
        data = 0
        todo = [a for a in plan.areas if a.area.mode in (USED, RAW)]
        for a in plan.areas:
            area = a.area
            if area.mode not in (USED, RAW):
                areas.append(area)
                continue
            n = todo.index(a) + 1
            label = f"{area.name}" + (f" ({area.fstype})" if area.fstype else "")
            with reporter.step(f"Reading {label}, area {n} of {len(todo)}"):
                mapw = MapWriter(tmp / f"{area.name}.map")
                source = (
                    _iter_used(a, block, frame)
                    if area.mode == USED
                    else _iter_raw(area, block, frame)
                )
                area_data = 0
                for f, r in pool.run(source, reporter.cancel):
                    reporter.check_cancel()
                    if r.payload is not None:
                        stored_len, raw_len = writer.put_frame(r.new, r.payload, r.head)
                        # the blocks just stored: their shares
                        shares = [(d, stored_len * n // raw_len) for d, n in r.new]
                        if v2:
                            tally.count(shares)
                        else:
                            tally.add(shares)  # format 1 may store a block twice
                    if r.seen:
                        tally.add(r.seen)
                    mapw.add_packed(r.mapped, r.count)
                    area_data += r.data
                    reporter.advance(f.read)
                reporter.check_cancel()
                data += area_data
                areas.append(
                    replace(
                        area,
                        map=mapw.path.name,
                        map_hash=mapw.close(),
                        data_bytes=area_data,
                    )
                )
        with reporter.step("Saving the image"):
            areas = [
                replace(a, min_size=min_sizes[a.name].result()) if a.name in min_sizes else a
                for a in areas
            ]
            chunks, stored = tally.totals(writer.share)
            tally.close()
            scratch.cleanup()
            writer.close()
            os.close(fd)
            fd = -1
            if dfd >= 0:
                os.close(dfd)
                dfd = -1
            stats = Stats(
                data_bytes=data,
                stored_bytes=stored,
                new_bytes=writer.new_bytes,
                chunks=chunks,
                new_chunks=writer.new_chunks,
                seconds=round(time.monotonic() - started, 3),
            )
            manifest = Manifest(
                name=plan.name,
                description=plan.description,
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                tool=f"bootmedia {__version__}",
                chunk_size=block,
                source=plan.disk,
                table=plan.table,
                areas=tuple(areas),
                stats=stats,
                digest=image_digest(plan.table, tuple(areas)),
            )
            repo.commit_image(tmp, manifest)
            tmp = None
        log.info("captured %s: %s", plan.name, stats)
        return CaptureResult(
            plan.name, plan.repo, data, stored, writer.new_bytes, stats.seconds, manifest.digest
        )
    except OSError as exc:
        where = exc.filename or plan.repo
        if exc.errno == 28:
            raise BootmediaError(_full_message(plan.repo, writer, tmp)) from None
        raise BootmediaError(f"capture failed: {exc.strerror or exc} ({where})") from None
    finally:
        tally.close()
        if scratch is not None:
            scratch.cleanup()
        if fd >= 0:
            os.close(fd)
        if dfd >= 0:
            os.close(dfd)
        if writer is not None:
            writer.abort()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        repo.close()


def _full_message(repo: Path, writer: FrameWriter | None, tmp: Path | None) -> str:
    """After ENOSPC: what is free, what this capture left behind, how to get it back."""
    try:
        free = human_bytes(shutil.disk_usage(repo).free)
    except OSError:
        free = "?"
    left = 0
    what = []
    pack = writer.unsealed() if writer is not None else None
    if pack is not None:
        left += pack[1]
        what.append(f"packs/{pack[0]}")
    if tmp is not None and tmp.exists():
        left += sum(p.stat().st_size for p in tmp.iterdir() if p.is_file())
    msg = f"destination full: no space left on the device holding {repo} ({free} free)"
    if left:
        msg += (
            f"; this capture left {human_bytes(left)} behind"
            + (f" in {what[0]}" if what else "")
            + f" (the next capture into it reuses it; 'bootmedia repair --gc {repo}' frees it)"
        )
    return msg
