"""make-usb: the hybrid ISO written to a stick, plus the BOOTMEDIA data partition.

The plan is checked without root; the real thing runs on a loop device with a small stand-in
hybrid ISO made by grub-mkrescue, the same tool (and so the same partition layout) as
build_iso.sh.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bootmedia import lab, stick
from bootmedia.cli import main
from bootmedia.disks import find_disk
from bootmedia.disks.model import Disk
from bootmedia.errors import Refused, UsageError
from bootmedia.progress import Reporter
from tests.conftest import root_only

MiB = 1 << 20
ISO = stick.IsoFacts(Path("/out/bootmedia.iso"), 300 * MiB + 2048, "gpt", 4)
STICK = Disk(
    name="sdb",
    path="/dev/sdb",
    size=16_008_609_792,
    model="Ultra",
    vendor="SanDisk",
    serial="4C530001234567",
    transport="usb",
    removable=True,
)


def test_plan_puts_the_data_partition_after_the_iso_aligned() -> None:
    plan = stick.plan_stick(ISO, STICK)
    assert plan.data_start == 301 * MiB
    assert plan.data_number == 5 and plan.data_fs == "exfat"
    assert plan.data_start + plan.data_size <= STICK.size - 45 * 512
    assert plan.sfdisk_line() == (
        f'start={301 * MiB // 512}, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="BOOTMEDIA"\n'
    )
    text = "\n".join(plan.summary())
    assert "4C530001234567" in text and "label BOOTMEDIA" in text and "exfat" in text
    assert plan.command()[-4:] == ["--data-fs", "exfat", "--confirm", "4C530001234567"]
    assert json.loads(json.dumps(plan.to_dict()))["data_start"] == 301 * MiB


def test_plan_ext4_and_mbr_types() -> None:
    assert (
        "0FC63DAF-8483-4772-8E79-3D69ED7D8E47" in stick.plan_stick(ISO, STICK, "ext4").sfdisk_line()
    )
    mbr = stick.IsoFacts(ISO.path, ISO.size, "dos", 2)
    plan = stick.plan_stick(mbr, STICK, "exfat")
    assert plan.data_number == 3 and plan.sfdisk_line() == f"start={301 * MiB // 512}, type=7\n"


def test_plan_without_data_partition() -> None:
    plan = stick.plan_stick(ISO, STICK, "none")
    assert plan.data_size == 0 and "No data partition" in plan.summary()


@pytest.mark.parametrize(
    ("disk", "fs", "message"),
    [
        (Disk("sdc", "/dev/sdc", 256 * MiB), "exfat", "smaller than the image"),
        (Disk("sdc", "/dev/sdc", 330 * MiB), "exfat", "data partition needs"),
        (Disk("sdc", "/dev/sdc", 8 << 30, logical_sector_size=4096), "exfat", "4096-byte"),
        (STICK, "ntfs", "choose one of"),
    ],
)
def test_plan_refuses_what_cannot_work(disk: Disk, fs: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        stick.plan_stick(ISO, disk, fs)


def test_inspect_iso_refuses_a_non_iso(tmp_path: Path) -> None:
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"\0" * 65536)
    with pytest.raises(UsageError, match="not an ISO 9660 image"):
        stick.inspect_iso(junk)


# ---------------------------------------------------------------- on a loop device

needs_grub = pytest.mark.skipif(
    not (shutil.which("grub-mkrescue") and Path("/usr/lib/grub/x86_64-efi").is_dir()),
    reason="grub-mkrescue with grub-efi-amd64-bin is not installed (scripts/deps.sh)",
)


@pytest.fixture(scope="module")
def mini_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small hybrid ISO laid out exactly like build_iso.sh's (same grub-mkrescue)."""
    root = tmp_path_factory.mktemp("iso")
    (root / "tree/boot/grub").mkdir(parents=True)
    (root / "tree/boot/grub/grub.cfg").write_text("echo bootmedia test\n")
    (root / "tree/live").mkdir()
    (root / "tree/live/filesystem.squashfs").write_bytes(bytes(range(256)) * 4096)
    iso = root / "mini.iso"
    subprocess.run(
        ["grub-mkrescue", "-o", str(iso), str(root / "tree"), "--", "-volid", "BOOTMEDIA_LIVE"],
        check=True,
        capture_output=True,
    )
    return iso


@pytest.fixture
def loopdev(tmp_path: Path) -> Iterator[Callable[[int], str]]:
    """A blank file-backed stick; detached (partitions unmounted) even when the test fails."""
    attached: list[str] = []

    def make(size: int) -> str:
        image = lab.make_file(tmp_path / f"stick{len(attached)}.img", size)
        attached.append(lab.attach(image))
        return attached[-1]

    yield make
    for dev in attached:
        for part in sorted(Path("/dev").glob(Path(dev).name + "p*")):
            subprocess.run(["umount", "-l", str(part)], capture_output=True, check=False)
        lab.detach(dev)


def _sfdisk(dev: str) -> dict:
    out = subprocess.run(["sfdisk", "--json", dev], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["partitiontable"]


def _blkid(dev: str, tag: str) -> str:
    out = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", tag, dev], capture_output=True, text=True, check=False
    )
    return out.stdout.strip()


@root_only
@needs_grub
@pytest.mark.parametrize("data_fs", ["exfat", "ext4"])
def test_make_usb_on_a_loop_device(
    mini_iso: Path, loopdev: Callable[[int], str], data_fs: str
) -> None:
    dev = loopdev(256 * MiB)
    iso = stick.inspect_iso(mini_iso)
    assert iso.table == "gpt" and iso.partitions == 4
    plan = stick.plan_stick(iso, find_disk(dev), data_fs)
    events: list[str] = []
    result = stick.make_stick(plan, Reporter(callback=lambda p: events.append(p.step)))

    part = result.data_partition
    assert part == f"{dev}p5"
    assert "Writing the live system" in events and "Reading it back" in events
    table = _sfdisk(dev)
    assert table["label"] == "gpt"
    # The backup GPT moved to the end of the stick: the table covers all of it.
    entry_sectors = int(table["table-length"]) * 128 // 512
    assert table["lastlba"] == 256 * MiB // 512 - 1 - 1 - entry_sectors
    data = table["partitions"][4]
    assert data["node"] == part and data["name"] == "BOOTMEDIA"
    assert int(data["start"]) * 512 == plan.data_start and plan.data_start % MiB == 0
    assert int(data["start"]) * 512 >= iso.size
    end = int(data["start"]) + int(data["size"]) - 1
    assert (
        0 <= table["lastlba"] - end < MiB // 512
    )  # the rest of the stick (sfdisk aligns to 1 MiB)
    assert data["type"] == stick.GPT_TYPES[data_fs]
    # The ISO's own entries are hidden from Windows' "format this drive?" prompt.
    assert all(p["attrs"].endswith("60,62,63") for p in table["partitions"][:4])
    subprocess.run(["sfdisk", "--verify", dev], check=True, capture_output=True)
    assert _blkid(part, "LABEL") == "BOOTMEDIA" and _blkid(part, "TYPE") == data_fs

    # The boot code (BIOS) and the ISO 9660 filesystem are what was in the file.
    raw = Path(mini_iso).read_bytes()
    with open(dev, "rb") as f:
        disk = f.read(len(raw))
    assert disk[:440] == raw[:440]
    first_usable = 64 * 512  # after the primary GPT; the backup copy at the ISO's end moved
    assert disk[first_usable : len(raw) - 33 * 512] == raw[first_usable : len(raw) - 33 * 512]
    assert _blkid(dev, "LABEL") == "BOOTMEDIA_LIVE"  # what live-boot looks for
    if data_fs == "ext4":
        assert result.populated
        subprocess.run(["mount", part, "/mnt"], check=True)
        try:
            names = sorted(p.name for p in Path("/mnt").iterdir())
        finally:
            subprocess.run(["umount", "/mnt"], check=True)
        assert {"images", "logs", "reports", "results", "bootmedia.toml.example"} <= set(names)


@root_only
@needs_grub
def test_make_usb_command_confirm_and_refusal(
    mini_iso: Path, loopdev: Callable[[int], str], tmp_path: Path
) -> None:
    dev = loopdev(160 * MiB)
    name = Path(dev).name
    argv = ["--log-dir", str(tmp_path), "make-usb", str(mini_iso), dev, "--data-fs", "ext4"]
    assert main([*argv, "--dry-run"]) == 0
    assert _sfdisk_or_none(dev) is None  # a dry run writes nothing
    assert main(argv) == 2  # no --confirm
    assert main([*argv, "--confirm", "loop999"]) == 2
    assert _sfdisk_or_none(dev) is None
    assert main([*argv, "--confirm", name]) == 0
    assert _blkid(f"{dev}p5", "LABEL") == "BOOTMEDIA"
    # With its data partition mounted, the stick is refused.
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", f"{dev}p5", str(mnt)], check=True)
    try:
        assert main([*argv, "--confirm", name]) == Refused.exit_code
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def _sfdisk_or_none(dev: str) -> dict | None:
    proc = subprocess.run(["sfdisk", "--json", dev], capture_output=True, text=True, check=False)
    return json.loads(proc.stdout)["partitiontable"] if proc.stdout.strip() else None
