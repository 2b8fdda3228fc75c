"""The verify job: decompress and hash every chunk an image uses, and say exactly what is damaged."""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bootmedia.errors import ImageError
from bootmedia.pipeline import OrderedPool
from bootmedia.progress import Reporter
from bootmedia.repo.manifest import Manifest
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
    def __init__(self, packs: PackReader) -> None:
        self.packs = packs

    def __call__(self, item: tuple[bytes, Location | None]) -> str | None:
        digest, loc = item
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
        located = (
            (row[0], repo.locate(row[0])) for row in refs.execute("SELECT DISTINCT hash FROM refs")
        )
        bad: dict[bytes, str] = {}
        with reporter.step(f"Checking {chunks} chunks"), PackReader(repo) as packs:
            for (digest, loc), problem in OrderedPool(_Check(packs)).run(located, reporter.cancel):
                reporter.check_cancel()
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
