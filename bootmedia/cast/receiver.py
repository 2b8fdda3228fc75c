"""bootmedia receive: join a multicast session, write the disk, fetch what the stream missed
from a fallback repository, then read everything back and verify it.

The stream's header carries the image's manifest and maps. They go into a scratch repository
(a temporary directory), so the target is planned and refused exactly as `bootmedia apply`
plans it, before the first write. The few chunks the final steps need again (the boot area and
the first 4 KiB, written last) are kept in that scratch repository; every other chunk is
written straight to all the places on the disk that hold it, and never kept in memory.
The write order is apply's: the target is marked incomplete first and only the last step makes
it look like a disk.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import resource
import socket
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import zstandard

from bootmedia import blockdev
from bootmedia.apply import (
    DEFER_BELOW,
    ApplyPlan,
    apply_image,
    finish_restore,
    mark_incomplete,
    plan_apply,
    recreate_swap,
    verify_written,
    write_partition_table,
)
from bootmedia.cast.sender import DEFAULT_PORTBASE, DEFAULT_RDV, udpcast_args
from bootmedia.cast.stream import Midstream, StreamHeader, image_header, read_header, records
from bootmedia.disks import check_writable
from bootmedia.errors import BootmediaError, ImageError, UsageError
from bootmedia.progress import Reporter
from bootmedia.repo.manifest import RAW, USED, Area
from bootmedia.repo.maps import Extent
from bootmedia.repo.packs import FLAG_ZSTD, chunk_hash, decode
from bootmedia.repo.paths import is_plain_name
from bootmedia.repo.store import Repository
from bootmedia.run import require_tools, stream, which
from bootmedia.scratch import new_scratch

log = logging.getLogger("bootmedia.cast")

_ADDR = re.compile(r" at (\S+) on (\S+)")


@dataclass
class ReceiveResult:
    image: str
    target: str
    address: str
    ok: bool
    detail: str
    from_stream: int = 0  # chunks
    from_fallback: int = 0
    written: int = 0
    seconds: float = 0.0
    joined: bool = True
    midstream: bool = False  # joined an async session after its start (cast --late-join)
    # Where the time went: wall and CPU seconds of each phase (CPU of this process, all its
    # threads; "programs" is the CPU of the programs it ran until the stream's end: udp-receiver,
    # and a few short ones before; stream-decode and stream-write are the parts of the stream
    # phase's CPU spent decompressing and hashing records, and writing them). bench_net adds
    # them up.
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return dict(vars(self))


_PROGRESS = re.compile(r"^bytes=")


class _Receiver:
    """udp-receiver, streamed through bootmedia.run.stream(): we read the session from its
    stdout. Its two ways to stop without the whole stream are outcomes the receive is built
    for (the fallback repository fills in); any other failure is a ToolError with the command
    and its stderr (a wrong interface, a port in use...), never taken for a missed session."""

    def __init__(self, argv: list[str]) -> None:
        self.address = ""
        self.run = stream(argv, stdout=True, on_line=self._line, ignore=_PROGRESS)

    @property
    def stdout(self) -> IO[bytes]:
        return self.run.stdout

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        return self.run.proc

    def _line(self, line: str) -> None:
        if (m := _ADDR.search(line)) and not self.address:
            self.address = m[1]

    def _timed_out(self, rc: int) -> bool:
        """What udpcast 20120424 does on its two timeouts: --receive-timeout of silence in the
        middle of a session prints "Receiver timeout" and exits 1; --start-timeout with no
        session exits 255 ("Receiver error") after it has set up its network ("UDP receiver
        for ... at ADDR on IF"), which a failure to start never gets to."""
        lines = self.run.lines
        if "Receiver timeout" in lines:
            return rc == 1
        return rc == 255 and bool(lines) and lines[-1] == "Receiver error" and bool(self.address)

    def finish(self) -> int:
        """Its exit status once it has ended (0, or one of the timeouts above); raises
        ToolError for anything else."""
        return self.run.finish(30, check=self._timed_out)

    def kill(self) -> None:
        self.run.kill()

    def tail(self) -> str:
        return " | ".join(self.run.lines[-2:])


@dataclass(frozen=True)
class ReceivePlan:
    """What `bootmedia receive` will do, before anything is written (the TUI's summary)."""

    target: str
    target_label: str
    fallback: str | None  # local path (mounted share, placeholder, directory)
    fallback_label: str | None  # what the technician named
    image: str | None
    interface: str | None
    rdv: str
    portbase: int

    def summary(self) -> list[str]:
        lines = [
            f"Target: {self.target_label}",
            "EVERYTHING on the target is overwritten with the image the multicast session sends"
            + (f" (it must be {self.image!r})" if self.image else ""),
            f"Session: rendezvous {self.rdv}, ports {self.portbase}-{self.portbase + 1}"
            + (f", interface {self.interface}" if self.interface else ""),
            (
                f"Chunks the stream misses come from {self.fallback_label or self.fallback}"
                if self.fallback
                else "No fallback repository: a chunk the stream misses fails the job"
            ),
            "Verify: read back and check every written byte",
        ]
        return lines

    def command(self) -> list[str]:
        argv = ["bootmedia", "receive", self.target]
        if self.fallback:
            argv += ["--fallback", self.fallback_label or self.fallback]
        if self.image:
            argv += ["--image", self.image]
        if self.interface:
            argv += ["--interface", self.interface]
        if self.rdv != DEFAULT_RDV:
            argv += ["--rdv", self.rdv]
        if self.portbase != DEFAULT_PORTBASE:
            argv += ["--portbase", str(self.portbase)]
        return argv

    def to_dict(self) -> dict[str, object]:
        return dict(vars(self))


def plan_receive(
    target: str,
    target_label: str = "",
    *,
    fallback: str | None = None,
    fallback_label: str | None = None,
    image: str | None = None,
    interface: str | None = None,
    rdv: str = DEFAULT_RDV,
    portbase: int = DEFAULT_PORTBASE,
) -> ReceivePlan:
    """Check what can be checked before the session: the target, the fallback repository."""
    if not os.path.exists(target):
        raise UsageError(f"{target}: no such disk")
    check_writable(target, repo_path=fallback)
    if not re.fullmatch(r"2(2[4-9]|3\d)(\.\d{1,3}){3}", rdv):
        raise UsageError(f"rendezvous {rdv}: not a multicast address")
    if fallback is not None:
        with Repository.open(fallback) as fb:
            if image:
                fb.image(image)
    return ReceivePlan(
        target, target_label or target, fallback, fallback_label, image, interface, rdv, portbase
    )


def receive(
    target: str,
    *,
    fallback: str | Path | None = None,
    fallback_label: str | None = None,
    image: str | None = None,
    interface: str | None = None,
    rdv: str = DEFAULT_RDV,
    portbase: int = DEFAULT_PORTBASE,
    start_timeout: int = 600,
    receive_timeout: int = 30,
    reporter: Reporter | None = None,
) -> ReceiveResult:
    reporter = reporter or Reporter()
    started = time.monotonic()
    require_tools("udp-receiver", "sfdisk", "mkswap", "partx")
    if not os.path.exists(target):
        raise UsageError(f"{target}: no such disk")
    check_writable(target, repo_path=fallback)
    if fallback is not None:
        with Repository.open(fallback) as fb:  # reachable and readable before we start
            if image:
                fb.image(image)
    argv = [
        which("udp-receiver") or "udp-receiver",
        *udpcast_args(interface, rdv, portbase),
        "--start-timeout", str(start_timeout),
        "--receive-timeout", str(receive_timeout),
        # A slice it could not complete (an async session: no retransmission; or dropped by
        # the sender) is passed on as it is instead of ending the transfer: its records fail
        # their hash check, the stream resynchronises on the next record, and the fallback
        # repository fills in. Without it udp-receiver exits at the first loss it cannot mend.
        "--ignore-lost-data",
    ]  # fmt: skip
    with reporter.step("Waiting for the multicast session"):
        rx = _Receiver(argv)
        header = None
        try:
            header = read_header(rx.stdout)
        except BaseException:
            rx.kill()
            raise
    if header is None:
        rc = rx.finish()
        return _late(target, fallback, fallback_label, image, rx, rc, reporter, started)
    prefix = b""
    if isinstance(header, Midstream):
        # Joined an async session after its start: no header, so the image comes from the
        # fallback, and every record still to come that the image needs is written from the
        # stream; the fallback fills in what went by before we joined.
        prefix = header.prefix
        if fallback is None or not image:
            rx.kill()
            raise BootmediaError(
                "joined a multicast session after its start (no header in the stream); give "
                "--fallback REPO and --image NAME to take the rest of the stream and fetch the "
                "start from the repository"
            )
        with Repository.open(fallback) as fb:
            header = image_header(fb, fb.image(image), 0, 0)
        reporter.message(
            f"joined the session after its start: the chunks sent before come from "
            f"{fallback_label or fallback}"
        )
    if image and header.image != image:
        rx.kill()
        raise UsageError(f"the session sends image {header.image!r}, not {image!r}")
    work = new_scratch("receive", say=reporter.message)  # a kill leaves it to the next sweep
    scratch = work.path
    try:
        return _receive_stream(
            target, header, rx, scratch, fallback, fallback_label, reporter, started, prefix
        )
    except BootmediaError as exc:
        exc.address = rx.address  # type: ignore[attr-defined]  # for the receiver's report
        exc.image = header.image  # type: ignore[attr-defined]
        raise
    finally:
        work.cleanup()


def _late(
    target: str,
    fallback: str | Path | None,
    label: str | None,
    image: str | None,
    rx: _Receiver,
    rc: int,
    reporter: Reporter,
    started: float,
) -> ReceiveResult:
    """No stream reached us (no session, or it had started without us): restore it all from
    the fallback repository, when there is one and we know the image."""
    why = rx.tail() or f"udp-receiver exit {rc}"
    if fallback is None or not image:
        raise BootmediaError(
            f"no multicast stream received ({why}); give --fallback REPO and --image NAME to "
            "restore from a repository instead"
        )
    reporter.message(f"no multicast stream ({why}): restoring everything from {label or fallback}")
    plan = plan_apply(fallback, image, target)
    res = apply_image(plan, reporter)
    return ReceiveResult(
        image=res.image,
        target=res.target,
        address=rx.address or _my_address(),
        ok=res.verified,
        detail="verified (joined late: every chunk from the fallback repository)",
        from_fallback=-1,
        written=res.written,
        seconds=round(time.monotonic() - started, 3),
        joined=False,
        notes=list(res.notes),
    )


def _scratch_repo(scratch: Path, header: StreamHeader) -> Repository:
    repo = Repository.init(scratch / "repo", version=1)  # holds the stream's records as sent
    tmp = repo.new_image_dir(header.image)
    (tmp / "manifest.json").write_bytes(header.manifest)
    for name, data in header.maps.items():
        if not is_plain_name(name) or name == "manifest.json":  # "", "m\0", "..", "a/b"
            raise ImageError(f"the multicast stream names a bad map file {name!r}")
        (tmp / name).write_bytes(data)
    os.rename(tmp, repo.image_dir(header.image))
    return repo


def _receive_stream(
    target: str,
    header: StreamHeader,
    rx: _Receiver,
    scratch: Path,
    fallback: str | Path | None,
    label: str | None,
    reporter: Reporter,
    started: float,
    prefix: bytes = b"",
) -> ReceiveResult:
    """prefix: the stream's first bytes, read looking for a header that was not there (a
    receiver that joined mid-stream; header is then the fallback's)."""
    try:
        repo = _scratch_repo(scratch, header)
        repo.close()
        # The stream's extents land at the image's own offsets: the table stays the image's
        # (--layout fit would move partitions, and the read-back would then look elsewhere).
        plan = plan_apply(scratch / "repo", header.image, target, layout="keep")
    except BaseException:
        rx.kill()
        raise
    if plan.grow is not None or plan.partition is not None:
        rx.kill()
        raise UsageError("receive restores whole disks without growing")
    repo = Repository.open(scratch / "repo", write=True)
    m = repo.image(header.image)
    # Where each chunk goes, and which chunks the final steps need again.
    places: dict[bytes, list[tuple[Area, Extent]]] = defaultdict(list)
    keep: set[bytes] = set()
    data_areas = [a for a in plan.areas if a.mode in (USED, RAW)]
    deferred: list[tuple[Area, Extent]] = []
    zeros: list[tuple[Area, Extent]] = []
    for a in m.areas:
        if not a.map:
            continue
        for e in repo.extents(m, a.name):
            if a.name == "head" and not e.is_zero:
                keep.add(e.hash)
            if a not in data_areas:
                continue
            if a.offset + e.offset < DEFER_BELOW:
                deferred.append((a, e))
                if not e.is_zero:
                    keep.add(e.hash)
                continue
            if e.is_zero:
                zeros.append((a, e))
            else:
                places[e.hash].append((a, e))
    reporter.add_total(plan.write_bytes * 2)
    fd = blockdev.open_device(target, write=True)
    writer = repo.chunk_writer()
    dctx = zstandard.ZstdDecompressor()
    got: set[bytes] = set()
    stats: dict[str, int] = {}
    from_stream = from_fallback = 0
    try:
        check_writable(plan.disk or plan.target)
        with reporter.step("Marking the target incomplete"):
            mark_incomplete(fd, plan)
        for a, e in zeros:
            blockdev.zero_range(fd, a.offset + e.offset, e.length)

        def put(digest: bytes, raw_len: int, data: bytes, payload: bytes, flags: int) -> None:
            for a, e in places.get(digest, ()):
                _pwrite_all(fd, data, a.offset + e.offset)
                reporter.advance(e.length)
            if digest in keep:
                writer.put(digest, raw_len, payload)
            got.add(digest)

        clock = _Phases()
        decoding = writing = 0.0  # this thread's CPU in decode() and in put()
        with reporter.step(f"Receiving {m.name} ({len(set(places) | keep)} chunks)"):
            for rec, payload in records(rx.stdout, stats, prefix):
                reporter.check_cancel()
                if rec.hash in got or (rec.hash not in places and rec.hash not in keep):
                    continue
                t0 = time.thread_time()
                try:
                    data = decode(rec, payload, dctx)
                except ImageError:
                    stats["damaged"] = stats.get("damaged", 0) + 1
                    continue  # fetched from the fallback below
                finally:
                    t1 = time.thread_time()
                    decoding += t1 - t0
                put(rec.hash, rec.raw_len, data, payload, rec.flags)
                writing += time.thread_time() - t1
                from_stream += 1
        rc = rx.finish()
        clock.lap("stream")
        clock.phases["stream-decode"] = {"wall": 0.0, "cpu": round(decoding, 3)}
        clock.phases["stream-write"] = {"wall": 0.0, "cpu": round(writing, 3)}
        clock.phases["programs"] = {"wall": 0.0, "cpu": _children_cpu()}
        missing = [h for h in (set(places) | keep) if h not in got]
        notes = []
        if prefix:
            notes.append(
                f"joined the session after its start ({from_stream} chunks from the stream)"
            )
        elif not stats.get("complete"):
            notes.append(f"the stream stopped early ({rx.tail() or f'udp-receiver exit {rc}'})")
        if missing:
            if fallback is None:
                raise BootmediaError(
                    f"{len(missing)} chunks did not arrive"
                    + (f" ({notes[0]})" if notes else "")
                    + "; give --fallback REPO to fetch them"
                )
            with (
                reporter.step(f"Fetching {len(missing)} missing chunks from {label or fallback}"),
                Repository.open(fallback) as fb,
            ):
                where = fb.locate_many(missing)
                if absent := [d for d in missing if d not in where]:
                    raise ImageError(
                        f"chunk {absent[0].hex()[:16]} is not in the fallback repository "
                        f"{label or fallback}"
                    )
                # In the order the fallback stores them, and each format-2 frame fetched and
                # decompressed once for all its missing blocks: block by block, a late joiner
                # fetched every ~1 MiB frame once per 16 KiB block (302 MB from nginx for an
                # image whose packs hold 25.5 MB).
                cctx = zstandard.ZstdCompressor(level=1, write_checksum=True)
                frame_at: tuple[str, int] | None = None
                frame = b""
                for digest in sorted(missing, key=lambda d: (*where[d][:2], where[d].in_frame)):
                    reporter.check_cancel()
                    loc = where[digest]
                    if loc.is_frame:  # format 2: a block inside a frame
                        if frame_at != (loc.pack, loc.offset):
                            _, frame = fb.read_frame(loc, dctx)
                            frame_at = (loc.pack, loc.offset)
                        data = frame[loc.in_frame : loc.in_frame + loc.raw_len]
                        if len(data) != loc.raw_len or chunk_hash(data) != digest:
                            raise ImageError(
                                f"{loc.pack}: block checksum mismatch in the fallback "
                                f"repository {label or fallback}"
                            )
                        # Only the chunks kept for the last steps are stored again.
                        payload = cctx.compress(data) if digest in keep else b""
                        put(digest, loc.raw_len, data, payload, FLAG_ZSTD)
                    else:
                        payload = fb.read_payload(loc, digest)
                        data = decode(loc.record(digest), payload, dctx)
                        put(digest, loc.raw_len, data, payload, loc.flags)
                    from_fallback += 1
        clock.lap("fallback")
        writer.close()
        blockdev.flush(fd)
        clock.lap("flush")
        verify_written(fd, repo, plan, reporter, skip_below=DEFER_BELOW)
        clock.lap("verify")
        recreate_swap(fd, plan, reporter)
        write_partition_table(fd, plan, reporter)
        finish_restore(fd, repo, plan, deferred, reporter)
        clock.lap("finish")
    except OSError as exc:
        raise BootmediaError(f"writing {target} failed: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(Exception):
            writer.abort()
        os.close(fd)
        repo.close()
        if rx.proc.poll() is None:  # we failed before its end: it has nothing more to say
            rx.kill()
    detail = "verified: every written byte read back and matched"
    if from_fallback:
        detail += f" ({from_fallback} of {from_stream + from_fallback} chunks from the fallback)"
    return ReceiveResult(
        image=m.name,
        target=plan.target,
        address=rx.address or _my_address(),
        ok=True,
        detail=detail,
        from_stream=from_stream,
        from_fallback=from_fallback,
        written=plan.write_bytes,
        seconds=round(time.monotonic() - started, 3),
        midstream=bool(prefix),
        phases=clock.phases,
        notes=notes + list(plan.notes),
    )


class _Phases:
    """Wall and CPU seconds between laps (CPU: this process, every thread)."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}
        self.wall, self.cpu = time.monotonic(), time.process_time()

    def lap(self, name: str) -> None:
        wall, cpu = time.monotonic(), time.process_time()
        self.phases[name] = {"wall": round(wall - self.wall, 3), "cpu": round(cpu - self.cpu, 3)}
        self.wall, self.cpu = wall, cpu


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round(r.ru_utime + r.ru_stime, 3)


def _pwrite_all(fd: int, data: bytes, pos: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n


def _my_address() -> str:
    return socket.gethostname()


def write_report(report_dir: Path, result: ReceiveResult, plan_target: str) -> Path:
    """The receiver's result, where the sender (and the technician) collect them."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{result.address}-{Path(plan_target).name}")
    path = report_dir / f"{name}.json"
    tmp = report_dir / f".{name}.tmp"
    doc = result.to_dict()
    doc["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


__all__ = ["ApplyPlan", "ReceiveResult", "receive", "write_report"]
