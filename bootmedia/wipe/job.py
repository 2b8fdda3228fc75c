"""Run a WipePlan: safety check, erase, tell the kernel, read back, report."""

from __future__ import annotations

import logging
import shlex
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bootmedia.disks import check_writable
from bootmedia.disks.files import TRANSPORT
from bootmedia.errors import BootmediaError, Cancelled
from bootmedia.progress import Reporter
from bootmedia.run import require_tools, run
from bootmedia.tools import blkid, partx
from bootmedia.wipe import ata, nvme, report, verify
from bootmedia.wipe.overwrite import write_range
from bootmedia.wipe.plan import HARDWARE, WipePlan, file_edges

log = logging.getLogger("bootmedia.wipe")
MiB = 1 << 20


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class _Job:
    def __init__(self, plan: WipePlan, reporter: Reporter, runner: Any) -> None:
        self.plan = plan
        self.reporter = reporter
        self.runner = runner
        self.disk = plan.disk
        self.report = report.WipeReport(
            disk=plan.disk.to_dict(), method=plan.method, secure=plan.secure, started=_now()
        )
        self.report.notes.extend(plan.notes)

    def tool(self, argv: tuple[str, ...] | list[str], timeout: float | None = None) -> Any:
        self.report.commands.append(shlex.join(argv))
        return self.runner(list(argv), timeout=timeout)

    def internal(self, words: str) -> None:
        # In-process writes are listed among the commands so the report shows every write.
        self.report.commands.append(f"(bootmedia) {words}")

    def write(self, start: int, length: int, pattern: Any = None) -> None:
        kind = "zeros" if pattern is None else "keystream"
        self.internal(f"write {kind} to {self.disk.path} bytes {start}..{start + length}")
        self.report.bytes_written += write_range(
            self.disk.path, start, length, self.reporter, pattern
        )

    def reread(self) -> None:
        # The kernel still has the old partitions; make it re-read the (now empty) table, or the
        # partition nodes of the erased disk linger until the next boot. A file has none.
        if self.disk.transport == TRANSPORT:
            return
        partx.forget(self.disk.path, record=self.report.commands)

    def erase(self, before: list[bytes]) -> None:
        plan, size = self.plan, self.disk.size
        if plan.method == "quick":
            for argv in plan.commands:
                self.tool(argv)
            for start, length in file_edges(self.disk):
                self.write(start, length)
            edge = min(MiB, size)
            self.write(0, edge)
            if size > edge:
                self.write(size - edge, edge)
        elif plan.method == "zero":
            self.write(0, size)
        elif plan.method == "random":
            self.write(0, size, verify.keystream(self.key))
        elif plan.method in ("discard", "nvme-format"):
            self.tool(plan.commands[0], timeout=plan.timeout)
        elif plan.method == "nvme-sanitize":
            self.tool(plan.commands[0])
            self.wait_for_sanitize()
        elif plan.method == "ata-secure-erase":
            self.tool(plan.commands[0])
            try:
                self.tool(plan.commands[1], timeout=plan.timeout)
            except BootmediaError:
                self.report.notes.append(ata.unlock_hint(self.disk.path))
                raise
        self.reread()

    @property
    def key(self) -> bytes:
        return self.plan.seed.to_bytes(32, "little")

    def wait_for_sanitize(self) -> None:
        argv = nvme.sanitize_log_command(self.plan.controller)
        self.report.commands.append(shlex.join(argv) + "  (polled until complete)")
        while True:
            self.reporter.check_cancel()
            status, fraction = nvme.parse_sanitize_log(self.runner(argv).stdout)
            self.reporter.message(
                f"sanitize {nvme.SSTAT_WORDS.get(status, status)}: {fraction:.0%}"
            )
            if status in (nvme.SSTAT_DONE, nvme.SSTAT_DONE_NO_DEALLOC):
                return
            if status != nvme.SSTAT_RUNNING:
                raise BootmediaError(
                    f"nvme sanitize on {self.plan.controller}: {nvme.SSTAT_WORDS.get(status, status)}"
                )
            time.sleep(float(self.plan.params.get("poll_seconds", 5)))

    def check(self, ranges: list[tuple[int, int]], before: list[bytes]) -> verify.Verification:
        path, seed = self.disk.path, self.plan.seed
        if self.plan.method == "random":
            return verify.check_pattern(path, ranges, seed, verify.keystream(self.key))
        if self.plan.method in HARDWARE:
            return verify.check_changed(path, ranges, seed, before)
        result = verify.check_zeros(path, ranges, seed)
        if self.plan.method == "quick" and result.passed:
            probe = blkid.probe(path)
            if probe:
                found = " ".join(f"{k}={v}" for k, v in probe.items())
                return verify.Verification(
                    "signatures", False, result.blocks, result.bytes_read, seed, (found,),
                    f"blkid still finds a signature: {found}",
                )  # fmt: skip
        return result


def wipe_disk(
    plan: WipePlan,
    reporter: Reporter,
    *,
    runner: Any = run,
    repo_path: str | Path | None = None,
    mountinfo: str | Path | None = None,
) -> report.WipeReport:
    """Erase the disk as planned and verify by reading back. Returns the report in every case
    after the safety check passed: `report.ok` is True only when the read-back passed.

    Raises Refused (nothing written) when the disk may not be written now. `runner` replaces
    bootmedia.run.run for the NVMe/ATA admin commands (tests feed recorded outputs).
    """
    check_writable(plan.disk, repo_path=repo_path, mountinfo=mountinfo)
    tools = {"quick": ["wipefs", "blkid"], "discard": ["blkdiscard"]}.get(plan.method, [])
    require_tools(*(["blockdev"] if plan.disk.transport != TRANSPORT else []), *tools)
    job = _Job(plan, reporter, runner)
    size = plan.disk.size
    # quick leaves the data in place by design: only its edges are expected to read as zeros.
    samples = 0 if plan.method == "quick" else plan.samples
    ranges = verify.sample_ranges(size, samples, plan.seed, plan.disk.logical_sector_size)
    reporter.add_total(size if plan.method in ("zero", "random") else 0)
    started = time.monotonic()
    log.info("wipe %s: %s (%s)", plan.method, plan.disk.label(), ", ".join(plan.disk.by_id))
    try:
        before: list[bytes] = []
        if plan.method in HARDWARE:
            with reporter.step("Reading a sample before the erase"):
                before = verify.read_ranges(plan.disk.path, ranges)
        with reporter.step(f"Erasing ({plan.method})"):
            job.erase(before)
        with reporter.step("Reading back a sample"):
            result = job.check(ranges, before)
        job.report.verification = result.to_dict()
        job.report.status = {
            True: report.QUICK if plan.method == "quick" else report.OK,
            False: report.NOT_VERIFIED,
            None: report.INCONCLUSIVE,
        }[result.passed]
    except Cancelled as exc:
        job.report.status, job.report.error = report.CANCELLED, str(exc)
        job.report.notes.append("the disk is partly erased: run the wipe again")
    except BootmediaError as exc:
        job.report.status, job.report.error = report.FAILED, str(exc)
    finally:
        job.report.finished = _now()
        job.report.seconds = round(time.monotonic() - started, 3)
    log.info("wipe %s: %s", plan.disk.ident, job.report.status)
    return job.report
