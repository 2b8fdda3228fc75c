"""The verify job: decompress and hash every chunk an image uses, and say exactly what is damaged."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bootmedia.errors import ImageError
from bootmedia.pipeline import OrderedPool
from bootmedia.progress import Reporter
from bootmedia.repo.manifest import Manifest
from bootmedia.repo.packs import chunk_hash
from bootmedia.repo.reader import PackReader
from bootmedia.repo.store import Location, Repository
from bootmedia.verify.plan import VerifyPlan, plan_verify

MAX_LISTED = 50  # damaged extents listed per run; the count is always exact


@dataclass(frozen=True)
class Damage:
    image: str
    area: str  # "p2", "head", or "manifest"
    offset: int | None  # byte offset inside the area
    reason: str

    def __str__(self) -> str:
        where = f"{self.area}" + (f" at offset {self.offset}" if self.offset is not None else "")
        return f"image {self.image}: {where}: {self.reason}"


@dataclass(frozen=True)
class VerifyResult:
    images: tuple[str, ...]
    chunks: int
    bytes: int
    damaged: tuple[Damage, ...] = ()
    damaged_count: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.damaged_count == 0


class _Check:
    """A problem (or None) for each block of a group; a group shares one stored frame."""

    def __init__(self, packs: PackReader) -> None:
        self.packs = packs

    def __call__(self, group: list[tuple[bytes, Location | None]]) -> list[str | None]:
        first = group[0][1]
        if first is None or not first.is_frame or len(group) == 1:
            return [self._one(digest, loc) for digest, loc in group]
        try:
            view = memoryview(self.packs.frame(first))
        except ImageError as exc:
            return [f"{exc} (pack {first.pack}, byte {first.offset})"] * len(group)
        out: list[str | None] = []
        for digest, loc in group:
            assert loc is not None
            block = view[loc.in_frame : loc.in_frame + loc.raw_len]
            good = len(block) == loc.raw_len and chunk_hash(block) == digest
            out.append(
                None if good else f"block checksum mismatch (pack {loc.pack}, byte {loc.offset})"
            )
        return out

    def _one(self, digest: bytes, loc: Location | None) -> str | None:
        if loc is None:
            return "chunk missing from the repository"
        try:
            self.packs.chunk(digest, loc)
        except ImageError as exc:
            return f"{exc} (pack {loc.pack}, byte {loc.offset})"
        return None


def verify_repo(
    repo_path: str | Path, image: str | None = None, reporter: Reporter | None = None
) -> VerifyResult:
    """plan_verify + verify_image in one call."""
    return verify_image(plan_verify(repo_path, image), reporter)


def verify_image(plan: VerifyPlan, reporter: Reporter | None = None) -> VerifyResult:
    repo_path, image = plan.repo, plan.image
    reporter = reporter or Reporter()
    damaged: list[Damage] = []
    count = 0

    def report(d: Damage) -> None:
        nonlocal count
        count += 1
        if len(damaged) < MAX_LISTED:
            damaged.append(d)

    with Repository.open(repo_path) as repo, tempfile.TemporaryDirectory() as tmp:
        repo.hold(image or "", "verify")
        for line in repo.take_notices():
            reporter.message(line)
        if image is not None:
            images = [repo.image(image)]
        else:
            images, unreadable = repo.scan_images()
            for line in unreadable:
                report(Damage(line.split(":")[0].removeprefix("image "), "manifest", None, line))
        # The references go to a scratch database, not a list: a 4 TB image has millions.
        refs = sqlite3.connect(
            Path(tmp) / "refs.sqlite", isolation_level=None, check_same_thread=False
        )
        refs.execute("PRAGMA journal_mode=OFF")
        refs.execute("PRAGMA synchronous=OFF")
        refs.execute(
            "CREATE TABLE refs(hash BLOB, image TEXT, area TEXT, offset INTEGER, length INTEGER)"
        )
        with reporter.step("Reading the image maps"):
            for m in images:
                _collect(repo, m, refs, report)
        refs.execute("CREATE INDEX refs_by_hash ON refs(hash)")
        chunks, total = refs.execute(
            "SELECT COUNT(*), COALESCE(SUM(n), 0) FROM "
            "(SELECT MAX(length) AS n FROM refs GROUP BY hash)"
        ).fetchone()
        reporter.add_total(total)
        # Blocks sharing a stored frame (format 2) are checked together: one read and one
        # decompression per frame. Ordered by place in the packs, the reads are sequential.
        refs.execute("CREATE TABLE locs(hash BLOB, pack TEXT, offset INTEGER)")
        batch: list[tuple[bytes, str, int]] = []
        for (digest,) in refs.cursor().execute("SELECT DISTINCT hash FROM refs"):
            loc = repo.locate(digest)
            batch.append((digest, loc.pack if loc else "", loc.offset if loc else -1))
            if len(batch) >= 10000:
                refs.executemany("INSERT INTO locs VALUES(?,?,?)", batch)
                batch = []
        refs.executemany("INSERT INTO locs VALUES(?,?,?)", batch)

        def located() -> Iterator[list[tuple[bytes, Location | None]]]:
            group: list[tuple[bytes, Location | None]] = []
            key: tuple[str, int] | None = None
            for digest, pack, offset in refs.execute(
                "SELECT hash, pack, offset FROM locs ORDER BY pack, offset"
            ):
                loc = repo.locate(digest) if offset >= 0 else None
                k = (pack, offset) if loc is not None and loc.is_frame else None
                if group and (k is None or k != key):
                    yield group
                    group = []
                group.append((digest, loc))
                key = k
            if group:
                yield group

        bad: dict[bytes, str] = {}
        with reporter.step(f"Checking {chunks} chunks"), PackReader(repo) as packs:
            for group, problems in OrderedPool(_Check(packs)).run(located(), reporter.cancel):
                reporter.check_cancel()
                for (digest, loc), problem in zip(group, problems, strict=True):
                    if problem:
                        bad[digest] = problem
                    if loc:
                        reporter.advance(loc.raw_len)
        for digest, problem in bad.items():
            for img, area, offset in refs.execute(
                "SELECT image, area, offset FROM refs WHERE hash=? ORDER BY image, area, offset",
                (digest,),
            ):
                report(Damage(img, area, offset, problem))
        refs.close()
    damaged.sort(key=lambda d: (d.image, d.area, d.offset or 0))
    return VerifyResult(tuple(m.name for m in images), chunks, total, tuple(damaged), count)


def _collect(repo: Repository, m: Manifest, refs: sqlite3.Connection, report: object) -> None:
    for a in m.areas:
        if not a.map:
            continue
        try:
            repo.check_map(m, a.name)
            rows = [
                (e.hash, m.name, a.name, e.offset, e.length)
                for e in repo.extents(m, a.name)
                if not e.is_zero
            ]
        except ImageError as exc:
            report(Damage(m.name, a.name, None, str(exc)))  # type: ignore[operator]
            continue
        refs.executemany("INSERT INTO refs VALUES(?,?,?,?,?)", rows)
