"""Wipes on real loop devices, read back independently, with the reports checked.

quick, zero, random and discard run for real. The NVMe and ATA paths run the whole job on a
loop device dressed as an NVMe or SATA disk: only the admin commands are faked, and the fake
either really erases the loop (the drive did its job) or does nothing (FOG's NVMe bug), so the
read-back verification is what the test exercises.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.cli import main
from bootmedia.disks import Disk, find_disk
from bootmedia.errors import Refused, ToolError
from bootmedia.progress import Reporter
from bootmedia.wipe import plan_wipe, wipe_disk
from bootmedia.wipe.report import CANCELLED, FAILED, NOT_VERIFIED, OK, QUICK
from bootmedia.wipe.verify import keystream
from tests.conftest import root_only
from tests.disktools import MiB, loopdev, sh
from tests.wipefakes import FakeRunner, fixture, nvme_answers

pytestmark = root_only
__all__ = ["loopdev"]

SIZE = 48 * MiB


def filled(loopdev: Callable[..., str], sector_size: int = 512) -> str:
    """A loop disk full of random data with a GPT and an ext4 partition: something to erase."""
    dev = loopdev(SIZE, sector_size)
    with open(dev, "r+b") as f:
        f.write(os.urandom(SIZE))
    sh("sfdisk", "-q", dev, input="label: gpt\n,,L\n")
    lab.rescan(dev)
    sh("mkfs.ext4", "-q", "-F", f"{dev}p1")
    return dev


def content(dev: str) -> bytes:
    fd = os.open(dev, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, SIZE, 0)
    finally:
        os.close(fd)


def zero_device(dev: str) -> Callable[[], bytes]:
    def erase() -> bytes:
        with open(dev, "r+b") as f:
            f.write(bytes(SIZE))
        return b"Success formatting namespace:1\n"

    return erase


@pytest.mark.parametrize("sector_size", [512, 4096])
def test_zero(loopdev: Callable[..., str], tmp_path: Path, sector_size: int) -> None:
    dev = filled(loopdev, sector_size)
    report = wipe_disk(plan_wipe(find_disk(dev), "zero"), Reporter())
    assert report.ok and report.status == OK
    assert content(dev) == bytes(SIZE)  # every byte, not just the sample
    assert report.bytes_written == SIZE
    assert report.verification["method"] == "zeros" and report.verification["passed"] is True
    assert report.verification["blocks"] == 2 + 256
    json_path, text_path = report.write(tmp_path)
    data = json.loads(json_path.read_text())
    assert data["ok"] is True and data["method"] == "zero" and data["disk"]["path"] == dev
    assert data["commands"][0] == f"(bootmedia) write zeros to {dev} bytes 0..{SIZE}"
    assert data["started"] <= data["finished"]
    text = text_path.read_text()
    assert "status:        erased and verified" in text and "PASSED (zeros)" in text


def test_random(loopdev: Callable[..., str]) -> None:
    dev = filled(loopdev)
    before = content(dev)
    plan = plan_wipe(find_disk(dev), "random", seed=1234)
    report = wipe_disk(plan, Reporter())
    assert report.ok and report.verification["method"] == "pattern"
    after = content(dev)
    assert after == keystream((1234).to_bytes(32, "little"))(0, SIZE)
    assert after[: 1 << 16] != before[: 1 << 16] and after.strip(b"\0")


def test_discard(loopdev: Callable[..., str]) -> None:
    dev = filled(loopdev)
    report = wipe_disk(plan_wipe(find_disk(dev), "discard"), Reporter())
    assert report.ok, report.verification
    assert report.commands[0] == f"blkdiscard --force {dev}"
    assert content(dev) == bytes(SIZE)


def test_quick_removes_tables_and_signatures(loopdev: Callable[..., str]) -> None:
    dev = filled(loopdev)
    before = content(dev)
    report = wipe_disk(plan_wipe(find_disk(dev), "quick"), Reporter())
    assert report.ok, report.verification
    assert report.commands[:2] == [f"wipefs --all --force {dev}p1", f"wipefs --all --force {dev}"]
    data = content(dev)
    assert data[:MiB] == bytes(MiB) and data[-MiB:] == bytes(MiB)
    # Issue 8 item 17: the status says what the quick wipe did, because the data is still there.
    kept = sum(data[i : i + MiB] == before[i : i + MiB] for i in range(0, SIZE, MiB))
    assert kept >= SIZE // MiB - 4, "quick is expected to leave the data in place"
    assert report.status == QUICK == "signatures removed, data still readable"
    assert "erased" not in report.status and "verified" not in report.status
    assert "status:        signatures removed, data still readable" in report.to_text()
    assert subprocess.run(["blkid", "-p", dev], capture_output=True).returncode == 2
    assert find_disk(dev).partitions == ()  # the kernel forgot the old partition
    assert "the data itself stays readable" in report.to_text()


def test_cancel_leaves_a_cancelled_report(loopdev: Callable[..., str]) -> None:
    dev = filled(loopdev)
    reporter = Reporter()
    reporter.cancel.set()
    report = wipe_disk(plan_wipe(find_disk(dev), "zero"), reporter)
    assert report.status == CANCELLED and not report.ok
    assert "run the wipe again" in report.to_text()


def test_refused_disk_is_not_touched(loopdev: Callable[..., str], tmp_path: Path) -> None:
    dev = filled(loopdev)
    plan = plan_wipe(find_disk(dev), "zero")
    before = content(dev)
    where = tmp_path / "mnt"
    where.mkdir()
    sh("mount", f"{dev}p1", str(where))
    try:
        with pytest.raises(Refused, match="is mounted on"):
            wipe_disk(plan, Reporter())
    finally:
        sh("umount", str(where))
    # Mounting ext4 updates its superblock; the partition table area is what a wipe hits first.
    assert content(dev)[:MiB] == before[:MiB] and before[:MiB].strip(b"\0")


def nvme_disk(dev: str) -> tuple[object, dict]:
    disk = dataclasses.replace(find_disk(dev), transport="nvme")
    return disk, nvme_answers(dev, "/dev/nvme0", "id-ctrl-crypto-sanitize.json")


def test_nvme_format_that_erases_passes(loopdev: Callable[..., str]) -> None:
    dev = filled(loopdev)
    disk, answers = nvme_disk(dev)
    fmt = ("nvme", "format", dev, "--ses=2", "--lbaf=0", "--force")
    runner = FakeRunner({**answers, fmt: zero_device(dev)})
    plan = plan_wipe(disk, "nvme-format", runner=runner, controller="/dev/nvme0")  # type: ignore[arg-type]
    report = wipe_disk(plan, Reporter(), runner=runner)
    assert report.ok, report.verification
    assert report.commands[0] == " ".join(fmt)
    assert "the disk reads as zeros" in report.verification["summary"]


def test_nvme_format_that_erases_nothing_is_caught(loopdev: Callable[..., str]) -> None:
    """FOG's bug: the format "succeeds" and the data is still there. The read-back says so."""
    dev = filled(loopdev)
    disk, answers = nvme_disk(dev)
    fmt = ("nvme", "format", dev, "--ses=2", "--lbaf=0", "--force")
    runner = FakeRunner({**answers, fmt: b"Success formatting namespace:1\n"})
    plan = plan_wipe(disk, "nvme-format", runner=runner, controller="/dev/nvme0")  # type: ignore[arg-type]
    report = wipe_disk(plan, Reporter(), runner=runner)
    assert report.status == NOT_VERIFIED and not report.ok
    assert "still holds its old content" in report.verification["failures"][0]
    assert "ERASE NOT VERIFIED" in report.to_text()


def test_nvme_sanitize_polls_until_done(loopdev: Callable[..., str]) -> None:
    dev = filled(loopdev)
    disk, answers = nvme_disk(dev)

    def crypto_erase() -> bytes:
        with open(dev, "r+b") as f:
            f.write(os.urandom(SIZE))  # a crypto erase leaves noise, not zeros
        return b""

    log = ("nvme", "sanitize-log", "/dev/nvme0", "--output-format=json")
    runner = FakeRunner(
        {
            **answers,
            ("nvme", "sanitize", "/dev/nvme0", "--sanact=2"): crypto_erase,
            log: [
                fixture("nvme/sanitize-log-running.json"),
                fixture("nvme/sanitize-log-done.json"),
            ],
        }
    )
    plan = plan_wipe(disk, "nvme-sanitize", runner=runner, controller="/dev/nvme0")  # type: ignore[arg-type]
    plan.params["poll_seconds"] = 0
    messages: list[str] = []
    report = wipe_disk(plan, Reporter(lambda p: messages.append(p.message)), runner=runner)
    assert report.ok, report.verification
    assert runner.calls.count(list(log)) == 2
    assert "sanitize in progress: 50%" in messages
    assert "reads as noise" in report.verification["summary"]


def test_nvme_sanitize_failure_is_reported(loopdev: Callable[..., str]) -> None:
    dev = filled(loopdev)
    disk, answers = nvme_disk(dev)
    runner = FakeRunner(
        {
            **answers,
            ("nvme", "sanitize", "/dev/nvme0", "--sanact=2"): b"",
            ("nvme", "sanitize-log", "/dev/nvme0", "--output-format=json"): fixture(
                "nvme/sanitize-log-failed.json"
            ),
        }
    )
    plan = plan_wipe(disk, "nvme-sanitize", runner=runner, controller="/dev/nvme0")  # type: ignore[arg-type]
    report = wipe_disk(plan, Reporter(), runner=runner)
    assert report.status == FAILED and "FAILED" in report.error


def ata_disk(dev: str) -> tuple[Disk, dict]:
    disk = dataclasses.replace(find_disk(dev), transport="sata")
    return disk, {("hdparm", "-I", dev): fixture("hdparm/samsung-860-not-frozen.txt")}


def test_ata_secure_erase(loopdev: Callable[..., str]) -> None:
    dev = filled(loopdev)
    disk, answers = ata_disk(dev)
    setpass = ("hdparm", "--user-master", "u", "--security-set-pass", "bootmedia", dev)
    erase = ("hdparm", "--user-master", "u", "--security-erase-enhanced", "bootmedia", dev)
    runner = FakeRunner({**answers, setpass: b"", erase: zero_device(dev)})
    report = wipe_disk(
        plan_wipe(disk, "ata-secure-erase", runner=runner), Reporter(), runner=runner
    )
    assert report.ok, report.verification
    assert report.commands[:2] == [" ".join(setpass), " ".join(erase)]


def test_ata_erase_failure_says_how_to_unlock(loopdev: Callable[..., str]) -> None:
    dev = filled(loopdev)
    disk, answers = ata_disk(dev)
    setpass = ("hdparm", "--user-master", "u", "--security-set-pass", "bootmedia", dev)
    erase = ("hdparm", "--user-master", "u", "--security-erase-enhanced", "bootmedia", dev)
    failure = ToolError(list(erase), 5, "SG_IO: bad/missing sense data")
    runner = FakeRunner({**answers, setpass: b"", erase: failure})
    report = wipe_disk(
        plan_wipe(disk, "ata-secure-erase", runner=runner), Reporter(), runner=runner
    )
    assert report.status == FAILED and "bad/missing sense data" in report.error
    assert any("--security-disable bootmedia" in n for n in report.notes)


def test_cli_wipe_writes_reports(
    loopdev: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dev = filled(loopdev)
    name = Path(dev).name
    argv = ["wipe", dev, "--method", "zero", "--confirm", name, "--report-dir", str(tmp_path)]
    assert main(argv) == 0
    (report,) = tmp_path.glob("wipe-*.json")
    assert json.loads(report.read_text())["status"] == OK
    assert (tmp_path / report.name.replace(".json", ".txt")).exists()
    assert "erased and verified" in capsys.readouterr().out


def run_cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["python3", "-m", "bootmedia", *argv], capture_output=True, text=True, check=False
    )


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_bad_input(loopdev: Callable[..., str]) -> None:
    dev = filled(loopdev)
    name = Path(dev).name
    one_line_error(run_cli("wipe", "/dev/sdzz", "--method", "zero"), 2, "/dev/sdzz: no such disk")
    one_line_error(
        run_cli("wipe", dev, "--method", "zero", "--confirm", "loop999"),
        2,
        "--confirm 'loop999' does not match",
    )
    one_line_error(run_cli("wipe", dev, "--method", "zero"), 2, "add --confirm with")
    one_line_error(
        run_cli("wipe", dev, "--method", "nvme-sanitize", "--confirm", name),
        2,
        "nvme-sanitize is not available on",
    )
    one_line_error(run_cli("wipe", dev, "--method", "shred"), 2, "unknown wipe method 'shred'")
    ro = loopdev(8 * MiB, read_only=True)
    one_line_error(
        run_cli("wipe", ro, "--method", "zero", "--confirm", Path(ro).name), 3, "read-only"
    )
    listing = run_cli("wipe", dev, "--list-methods")
    assert (
        listing.returncode == 0
        and "nvme-format       unavailable  only for NVMe drives" in listing.stdout
    )
