"""Discovery from recorded machines (probert dumps of real hardware): no root, no devices."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bootmedia.disks import Disk, SystemFacts, build_disks, confirm_matches
from bootmedia.disks.model import INCOMPLETE_MARKER
from bootmedia.disks.safety import check_confirm, snapshot_refusal
from bootmedia.disks.system import parse_mountinfo
from bootmedia.errors import UsageError

MACHINES = Path(__file__).parent / "fixtures" / "machines"


def machine(name: str, facts: SystemFacts | None = None) -> dict[str, Disk]:
    blockdev = json.loads((MACHINES / f"{name}.json").read_text())["blockdev"]
    return {d.name: d for d in build_disks(blockdev, facts)}


def test_sata_desktop_with_identical_drives_tells_them_apart() -> None:
    disks = machine("imsm")
    # The DVD drive and the RAID (md) devices are not targets.
    assert sorted(disks) == ["nvme0n1", "nvme1n1", "sda", "sdb", "sdc"]
    sda, sdb = disks["sda"], disks["sdb"]
    assert sda.model == sdb.model == "TOSHIBA DT01ACA1"
    assert (sda.serial, sdb.serial) == ("Y6AKDK9MS", "Z6NVLPBMS")
    assert sda.label() != sdb.label()
    assert sda.label() == "TOSHIBA DT01ACA1 · Y6AKDK9MS · 1.0 TB · sata · sda"
    assert sda.transport == "sata" and sda.vendor == ""  # libata's "ATA" says nothing
    assert sda.wwn == "0x5000039febf22ff6"
    # Human-readable by-id names come before wwn-/scsi- ones.
    assert sda.by_id[0] == "/dev/disk/by-id/ata-TOSHIBA_DT01ACA100_Y6AKDK9MS"
    assert "/dev/disk/by-id/wwn-0x5000039febf22ff6" in sda.by_id
    assert sda.partition_table == "gpt"
    esp, root = sda.partitions
    assert (esp.number, esp.fstype, esp.size, esp.start) == (1, "vfat", 536870912, 1048576)
    assert esp.part_type == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
    assert root.fstype == "ext4"


def test_usb_stick_and_nvme() -> None:
    disks = machine("imsm")
    stick = disks["sdc"]
    assert (stick.transport, stick.removable, stick.vendor) == ("usb", True, "SanDisk")
    assert stick.model == "Ultra USB 3.0"
    assert stick.serial == "4C530000021125101524"
    assert stick.label().startswith("SanDisk Ultra USB 3.0 · 4C530000021125101524 · 15.4 GB · usb")
    nvme = disks["nvme0n1"]
    assert nvme.transport == "nvme"
    assert nvme.wwn == "eui.1718774211520001001b444a444677f0"
    assert nvme.fstype == "isw_raid_member"
    assert disks["nvme1n1"].serial != nvme.serial


def test_nvme_laptop_with_luks_and_empty_card_reader() -> None:
    facts = SystemFacts(
        holders={"nvme0n1p3": ("dm-0",)},
        mounts={"nvme0n1p1": ("/boot/efi",), "nvme0n1p2": ("/boot",)},
        used={"nvme0n1p1": 6 << 20},
    )
    disks = machine("mwhudson", facts)
    assert list(disks) == ["nvme0n1"]  # dm-* are holders, the card reader has no medium
    nvme = disks["nvme0n1"]
    assert nvme.model == "ADATA SX8200PNP" and nvme.serial == "2J2420056403"
    assert [p.fstype for p in nvme.partitions] == ["vfat", "ext4", "crypto_LUKS", "zfs_member"]
    assert nvme.partitions[0].used == 6 << 20
    assert nvme.partitions[2].holders == ("dm-0",)
    assert nvme.all_mountpoints == ("/boot/efi", "/boot")


def test_virtio_vm_without_serial() -> None:
    disks = machine("virtio")
    assert list(disks) == ["vda"]  # the floppy and the DVD are not targets
    vda = disks["vda"]
    assert (vda.transport, vda.serial, vda.size) == ("virtio", "", 10737418240)
    # No serial: the PCI path tells it apart, and stays put when vda/vdb are renamed.
    assert vda.label() == "virtio disk · virtio-pci-0000:00:04.0 · 10.7 GB · virtio · vda"
    assert vda.by_path == "/dev/disk/by-path/virtio-pci-0000:00:04.0"


def test_windows_vm_and_many_disks_and_multipath() -> None:
    win = machine("win10")["sda"]
    assert [p.fstype for p in win.partitions] == ["vfat", "", "BitLocker", "ntfs"]
    assert sorted(machine("many-nics-and-disks")) == ["sda", "vda", "vdb", "vdc"]
    mp = machine("multipath")
    # Two paths to one LUN: same serial, both listed (and both refused once dm holds them).
    assert mp["sda"].serial == mp["sdb"].serial == "5000c50015ea71aa"
    assert mp["sda"].transport == "scsi"


def test_to_dict_is_json_and_carries_the_label() -> None:
    sda = machine("imsm")["sda"]
    data = json.loads(json.dumps(sda.to_dict()))
    assert data["serial"] == "Y6AKDK9MS" and data["label"] == sda.label()
    assert data["partitions"][0]["fstype"] == "vfat"


def test_incomplete_restore_marker_in_sector0() -> None:
    facts = SystemFacts(sector0={"sda": INCOMPLETE_MARKER + b"\0" * 100})
    disks = machine("imsm", facts)
    assert disks["sda"].incomplete_restore and not disks["sdb"].incomplete_restore


def test_confirm_by_serial_last4_and_by_id() -> None:
    sda = machine("imsm")["sda"]
    assert confirm_matches(sda, "Y6AKDK9MS")
    assert confirm_matches(sda, "y6akdk9ms")
    assert confirm_matches(sda, "9MS".rjust(4, "K"))  # last 4: "K9MS"
    assert confirm_matches(sda, "ata-TOSHIBA_DT01ACA100_Y6AKDK9MS")
    assert confirm_matches(sda, "/dev/disk/by-id/wwn-0x5000039febf22ff6")
    for wrong in ("sda", "/dev/sda", "Z6NVLPBMS", "LPBMS", "", "DK9"):
        assert not confirm_matches(sda, wrong), wrong


def test_confirm_kernel_name_only_without_serial() -> None:
    vda = machine("virtio")["vda"]
    assert confirm_matches(vda, "vda")
    assert not confirm_matches(vda, "vdb")
    with pytest.raises(UsageError, match="kernel name 'vda'"):
        check_confirm(vda, "sda")
    with pytest.raises(UsageError, match="add --confirm"):
        check_confirm(machine("imsm")["sda"], None)


def test_refusal_rules_on_a_recorded_disk(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("Filename Type Size Used Priority\n")
    nvme = machine("mwhudson", SystemFacts(holders={"nvme0n1p3": ("dm-0",)}))["nvme0n1"]
    reason = snapshot_refusal(nvme, mountinfo=empty, swaps=empty)
    assert reason is not None and "nvme0n1p3 is in use by dm-0" in reason
    ro = dataclasses.replace(nvme, read_only=True)
    assert "read-only" in (snapshot_refusal(ro, mountinfo=empty, swaps=empty) or "")
    free = machine("mwhudson")["nvme0n1"]
    assert snapshot_refusal(free, mountinfo=empty, swaps=empty) is None


def test_parse_mountinfo_unescapes_paths() -> None:
    text = (
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        "90 27 7:1 / /media/my\\040stick rw - vfat /dev/loop1p1 rw\n"
        "91 27 0:40 / /run/live/rootfs/filesystem.squashfs ro - squashfs /dev/loop0 ro\n"
    )
    mounts = parse_mountinfo(text)
    assert [m.mountpoint for m in mounts] == ["/", "/media/my stick", mounts[2].mountpoint]
    assert (mounts[1].devnum, mounts[1].fstype, mounts[1].source) == ("7:1", "vfat", "/dev/loop1p1")
    assert mounts[2].fstype == "squashfs"


def test_text_listing_tells_identical_drives_apart() -> None:
    from bootmedia.commands.disks import describe

    disks = machine("imsm", SystemFacts(mounts={"sda1": ("/boot/efi",)}, used={"sda1": 5 << 20}))
    text = "\n".join(
        describe(disks["sda"], "sda (Y6AKDK9MS): partition sda1 is mounted on /boot/efi")
    )
    assert "/dev/sda  TOSHIBA DT01ACA1 · Y6AKDK9MS · 1.0 TB · sata · sda" in text
    assert "wwn 0x5000039febf22ff6" in text
    assert "/dev/disk/by-id/ata-TOSHIBA_DT01ACA100_Y6AKDK9MS" in text
    assert "sda1  vfat  efi  536.9 MB  5.2 MB used  /boot/efi" in text
    assert "bootmedia will not write here: sda (Y6AKDK9MS): partition sda1 is mounted" in text
    other = "\n".join(describe(disks["sdb"], None))
    assert "Z6NVLPBMS" in other and other.endswith("writable")


def test_cli_shows_a_recorded_machine(capsys: pytest.CaptureFixture[str]) -> None:
    from bootmedia.cli import main

    assert main(["disks", "--machine", str(MACHINES / "imsm.json"), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["disks"]
    assert [d["serial"] for d in listed if d["model"] == "TOSHIBA DT01ACA1"] == [
        "Y6AKDK9MS",
        "Z6NVLPBMS",
    ]
    assert main(["disks", "--machine", str(MACHINES / "virtio.json"), "vda"]) == 0
    assert "virtio-pci-0000:00:04.0" in capsys.readouterr().out
    assert main(["disks", "--machine", str(MACHINES / "nope.json")]) == 2
    assert "nope.json: no such machine file" in capsys.readouterr().err
