"""Which wipe methods are offered, and the exact nvme/hdparm commands, from recorded outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bootmedia.disks import Disk, build_disks
from bootmedia.errors import UsageError
from bootmedia.wipe import ata, available_methods, nvme, plan_wipe
from tests.wipefakes import FakeRunner, fixture, nvme_answers

MACHINES = Path(__file__).parent / "fixtures" / "machines"


def recorded(machine: str, name: str) -> Disk:
    blockdev = json.loads((MACHINES / f"{machine}.json").read_text())["blockdev"]
    return next(d for d in build_disks(blockdev) if d.name == name)


def methods(disk: Disk, runner: FakeRunner) -> dict[str, tuple[bool, str]]:
    return {m.name: (m.available, m.reason) for m in available_methods(disk, runner=runner)}


NVME = recorded("imsm", "nvme0n1")
SATA = recorded("imsm", "sda")
USB = recorded("imsm", "sdc")


def test_nvme_with_crypto_erase_and_sanitize() -> None:
    runner = FakeRunner(nvme_answers("/dev/nvme0n1", "/dev/nvme0", "id-ctrl-crypto-sanitize.json"))
    offered = methods(NVME, runner)
    assert offered["nvme-format"] == (True, "crypto erase")
    assert offered["nvme-sanitize"] == (True, "supports block, crypto")
    assert offered["ata-secure-erase"] == (False, "only for SATA/ATA drives")
    plan = plan_wipe(NVME, "nvme-format", runner=runner)
    assert plan.commands == (("nvme", "format", "/dev/nvme0n1", "--ses=2", "--lbaf=0", "--force"),)
    assert any("EVERY namespace on /dev/nvme0" in n for n in plan.notes)
    plan = plan_wipe(NVME, "nvme-sanitize", runner=runner)
    assert plan.commands == (("nvme", "sanitize", "/dev/nvme0", "--sanact=2"),)
    assert plan.controller == "/dev/nvme0"
    assert "nvme sanitize-log /dev/nvme0 --output-format=json" in " ".join(plan.actions)


def test_nvme_without_crypto_erase_keeps_the_4k_format() -> None:
    runner = FakeRunner(
        nvme_answers("/dev/nvme0n1", "/dev/nvme0", "id-ctrl-format-only.json", "id-ns-4k.json")
    )
    offered = methods(NVME, runner)
    assert offered["nvme-format"] == (True, "user-data erase (no crypto erase)")
    assert offered["nvme-sanitize"] == (False, "the controller does not support Sanitize")
    plan = plan_wipe(NVME, "nvme-format", runner=runner)
    # LBA format 1 (4096 bytes) is in use: the format keeps it, the sector size cannot change.
    assert plan.commands == (("nvme", "format", "/dev/nvme0n1", "--ses=1", "--lbaf=1", "--force"),)
    assert plan.params["lba_size"] == 4096
    with pytest.raises(UsageError, match=r"nvme-sanitize is not available on .*does not support"):
        plan_wipe(NVME, "nvme-sanitize", runner=runner)


def test_nvme_without_format_nvm() -> None:
    runner = FakeRunner(nvme_answers("/dev/nvme0n1", "/dev/nvme0", "id-ctrl-no-format.json"))
    assert methods(NVME, runner)["nvme-format"] == (
        False,
        "the controller does not support Format NVM",
    )


def test_every_nvme_format_carries_a_secure_erase_setting() -> None:
    """The FOG bug: `nvme format` without --ses erases nothing. It must be impossible here."""
    for ctrl in ("id-ctrl-crypto-sanitize.json", "id-ctrl-format-only.json"):
        for ns in ("id-ns-512.json", "id-ns-4k.json"):
            runner = FakeRunner(nvme_answers("/dev/nvme0n1", "/dev/nvme0", ctrl, ns))
            caps = nvme.probe("/dev/nvme0n1", runner)
            for crypto in (None, False):
                argv = nvme.format_command(caps, crypto)
                assert [a for a in argv if a.startswith("--ses=")] in (["--ses=1"], ["--ses=2"])


def test_sanitize_log_states() -> None:
    assert nvme.parse_sanitize_log(fixture("nvme/sanitize-log-running.json")) == (2, 0.5)
    status, done = nvme.parse_sanitize_log(fixture("nvme/sanitize-log-done.json"))
    assert status == nvme.SSTAT_DONE and done > 0.99
    assert nvme.parse_sanitize_log(fixture("nvme/sanitize-log-failed.json"))[0] == 3
    # nvme-cli 1.x: flat object, SSTAT as a number (0x101: completed, global data erased).
    assert nvme.parse_sanitize_log('{"sprog": 65535, "sstat": 257}')[0] == nvme.SSTAT_DONE


def hdparm(rel: str) -> FakeRunner:
    return FakeRunner({("hdparm", "-I", "/dev/sda"): fixture(f"hdparm/{rel}")})


def test_ata_secure_erase_commands() -> None:
    runner = hdparm("samsung-860-not-frozen.txt")
    assert methods(SATA, runner)["ata-secure-erase"] == (
        True,
        "enhanced erase, the drive estimates 8 min",
    )
    assert methods(SATA, runner)["nvme-format"] == (False, "only for NVMe drives")
    plan = plan_wipe(SATA, "ata-secure-erase", runner=runner)
    assert plan.commands == (
        ("hdparm", "--user-master", "u", "--security-set-pass", "bootmedia", "/dev/sda"),
        ("hdparm", "--user-master", "u", "--security-erase-enhanced", "bootmedia", "/dev/sda"),
    )
    assert plan.timeout == 30 * 60


def test_frozen_drive_is_reported_never_skipped() -> None:
    runner = hdparm("samsung-860-frozen.txt")
    assert methods(SATA, runner)["ata-secure-erase"] == (False, ata.FROZEN_HINT)
    assert ata.FROZEN_HINT == "frozen: suspend and resume the machine, then try again"
    with pytest.raises(UsageError, match="frozen: suspend and resume the machine, then try again"):
        plan_wipe(SATA, "ata-secure-erase", runner=runner)


def test_drive_with_a_password_or_no_security() -> None:
    why = methods(SATA, hdparm("samsung-860-password-set.txt"))["ata-secure-erase"]
    assert why == (False, "a security password is already set on the drive (disable it first)")
    why = methods(SATA, hdparm("qemu-no-security.txt"))["ata-secure-erase"]
    assert why == (False, "the drive does not support the ATA security feature set")


def test_parse_security_states() -> None:
    sec = ata.parse_security(fixture("hdparm/samsung-860-frozen.txt").decode())
    assert (sec.supported, sec.enabled, sec.locked, sec.frozen, sec.enhanced) == (
        True,
        False,
        False,
        True,
        True,
    )
    assert (sec.erase_minutes, sec.enhanced_minutes) == (2, 8)


def test_usb_disk_gets_no_ata_or_nvme_commands() -> None:
    offered = methods(USB, FakeRunner({}))  # any command would fail the test
    assert (
        offered["ata-secure-erase"][0] is False and "USB bridges" in offered["ata-secure-erase"][1]
    )
    assert offered["zero"] == (True, "") and offered["random"] == (True, "")


def test_unknown_method_and_misplaced_secure() -> None:
    with pytest.raises(UsageError, match="unknown wipe method 'shred'"):
        plan_wipe(USB, "shred", runner=FakeRunner({}))
    with pytest.raises(UsageError, match="--secure only applies to --method discard"):
        plan_wipe(USB, "zero", secure=True, runner=FakeRunner({}))


def test_plan_renders_every_step() -> None:
    plan = plan_wipe(USB, "zero", runner=FakeRunner({}), seed=7)
    text = plan.render()
    assert USB.label() in text and "write zeros over all 15.4 GB" in text
    assert "256 random blocks: expect zeros" in text
    assert json.loads(json.dumps(plan.to_dict()))["seed"] == 7
