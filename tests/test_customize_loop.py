"""customize on real loop devices: Linux roots on ext4, btrfs and xfs, a Windows SYSTEM hive on a
real NTFS, the ESP's fallback loader, hooks; each change read back by a second, independent way."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bootmedia.cli import main
from bootmedia.customize import (
    CustomizeOptions,
    Machine,
    customize_disk,
    make_rule,
    plan_customize,
)
from bootmedia.errors import BootmediaError, Refused, UsageError
from tests import customize_disks as cd
from tests.disktools import sh

MiB = 1 << 20
MACHINE = Machine(serial="SN-4711", macs=("52:54:00:12:34:56",))


def linux_disk(loopdev: Callable[..., str], fstype: str, **kw: object) -> tuple[str, str, str]:
    dev = loopdev(420 * MiB)
    esp, root = cd.partitions(dev, [(34, cd.ESP), (0, cd.LINUX)])
    cd.make_esp(esp, {"EFI/debian/shimx64.efi": cd.SHIM, "EFI/debian/grubx64.efi": cd.GRUB})
    cd.make_linux_root(root, fstype, **kw)  # type: ignore[arg-type]
    return dev, esp, root


def mounted_read(node: str, rel: str, subvol: str = "") -> tuple[bool, bytes]:
    """Read a file through a plain read-only mount (btrfs, xfs); (exists, bytes)."""
    with tempfile.TemporaryDirectory() as mnt:
        opts = "ro" + (f",subvol={subvol}" if subvol else "")
        sh("mount", "-o", opts, node, mnt)
        try:
            p = Path(mnt) / rel
            return (p.exists() or p.is_symlink()), (p.read_bytes() if p.is_file() else b"")
        finally:
            sh("umount", mnt)


@pytest.mark.parametrize(
    ("fstype", "subvol"), [("ext4", ""), ("btrfs", ""), ("btrfs", "@"), ("xfs", "")]
)
def test_linux_hostname_and_machine_id(
    loopdev: Callable[..., str], fstype: str, subvol: str
) -> None:
    dev, _, root = linux_disk(loopdev, fstype, subvol=subvol)
    opts = CustomizeOptions(rule=make_rule("lab-{serial}"), remove_ssh_keys=True)
    plan = plan_customize(dev, opts, MACHINE)
    text = "\n".join(plan.summary())
    assert plan.linux is not None and plan.linux.device == root
    assert plan.linux.subvol == subvol and plan.linux.how == "fstab"
    assert "/etc/hostname: 'golden' -> 'lab-SN-4711'" in text
    assert "/var/lib/dbus/machine-id removed" in text
    assert plan.command()[:3] == ["bootmedia", "customize", dev]

    result = customize_disk(plan)
    assert result.name == "lab-SN-4711"

    if fstype == "ext4":  # e2fsprogs' own reader, no kernel mount at all
        hostname = cd.read_ext4(root, "/etc/hostname")
        hosts = cd.read_ext4(root, "/etc/hosts")
        machine_id = cd.read_ext4(root, "/etc/machine-id")
        ls = subprocess.run(
            ["debugfs", "-R", "ls -l /etc", root], capture_output=True, text=True, check=True
        ).stdout
        assert " machine-id" in ls  # kept, empty
        dbus = subprocess.run(
            ["debugfs", "-R", "ls /var/lib/dbus", root], capture_output=True, text=True, check=True
        ).stdout
        assert "machine-id" not in dbus
        keys = subprocess.run(
            ["debugfs", "-R", "ls /etc/ssh", root], capture_output=True, text=True, check=True
        ).stdout
        assert "ssh_host_" not in keys
        unit = cd.read_ext4(root, "/etc/systemd/system/bootmedia-ssh-keygen.service")
        assert "ssh-keygen -A" in unit
    else:
        hostname = mounted_read(root, "etc/hostname", subvol)[1].decode()
        hosts = mounted_read(root, "etc/hosts", subvol)[1].decode()
        exists, mid = mounted_read(root, "etc/machine-id", subvol)
        assert exists
        machine_id = mid.decode()
        assert not mounted_read(root, "var/lib/dbus/machine-id", subvol)[0]
        assert not mounted_read(root, "etc/ssh/ssh_host_rsa_key", subvol)[0]
        assert mounted_read(
            root, "etc/systemd/system/multi-user.target.wants/bootmedia-ssh-keygen.service", subvol
        )[0]
    assert hostname == "lab-SN-4711\n"
    assert "127.0.1.1\tlab-SN-4711\n" in hosts
    assert "127.0.0.1\tlocalhost\n" in hosts and "golden" not in hosts
    assert machine_id == ""
    # Nothing is left mounted, and the filesystem is clean.
    assert root not in Path("/proc/mounts").read_text()
    if fstype == "ext4":
        sh("e2fsck", "-fn", root)


def test_dbus_symlink_kept_and_hosts_line_added(loopdev: Callable[..., str]) -> None:
    dev, _, root = linux_disk(
        loopdev, "ext4", dbus="symlink", hosts="127.0.0.1 localhost\n::1 localhost\n"
    )
    plan = plan_customize(dev, CustomizeOptions(rule=make_rule("web01")), MACHINE)
    assert "is a link to it (kept)" in "\n".join(plan.summary())
    customize_disk(plan)
    assert cd.read_ext4(root, "/etc/hosts") == (
        "127.0.0.1 localhost\n127.0.1.1\tweb01\n::1 localhost\n"
    )
    out = subprocess.run(
        ["debugfs", "-R", "stat /var/lib/dbus/machine-id", root],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert 'Fast link dest: "/etc/machine-id"' in out
    # SSH keys were not asked for: still there.
    assert "PRIVATE rsa" in cd.read_ext4(root, "/etc/ssh/ssh_host_rsa_key")


def test_symlinked_hostname_in_a_hostile_image_is_refused(
    loopdev: Callable[..., str], tmp_path: Path
) -> None:
    dev, _, root = linux_disk(loopdev, "ext4")
    victim = tmp_path / "victim"
    victim.write_text("do not touch\n")
    with tempfile.TemporaryDirectory() as mnt:
        sh("mount", root, mnt)
        (Path(mnt) / "etc" / "hostname").unlink()
        (Path(mnt) / "etc" / "hostname").symlink_to(victim)
        sh("umount", mnt)
    with pytest.raises(BootmediaError, match="symlink"):
        plan = plan_customize(dev, CustomizeOptions(rule=make_rule("web01")), MACHINE)
        customize_disk(plan)
    assert victim.read_text() == "do not touch\n"
    assert root not in Path("/proc/mounts").read_text()


def test_two_linux_systems_need_root(loopdev: Callable[..., str]) -> None:
    dev = loopdev(200 * MiB)
    a, b = cd.partitions(dev, [(90, cd.LINUX), (0, cd.LINUX)])
    cd.make_linux_root(a, "ext4", hostname="one")
    cd.make_linux_root(b, "ext4", hostname="two")
    # Each fstab names its own partition as /: fstab cannot choose between them.
    with pytest.raises(UsageError, match="several Linux systems"):
        plan_customize(dev, CustomizeOptions(rule=make_rule("x1")), MACHINE)
    plan = plan_customize(dev, CustomizeOptions(rule=make_rule("x1"), root=b), MACHINE)
    customize_disk(plan)
    assert cd.read_ext4(b, "/etc/hostname") == "x1\n"
    assert cd.read_ext4(a, "/etc/hostname") == "one\n"


def test_fallback_loader_added_and_read_back(loopdev: Callable[..., str]) -> None:
    dev, esp, _ = linux_disk(loopdev, "ext4")
    plan = plan_customize(dev, CustomizeOptions(add_fallback=True), MACHINE)
    assert plan.loader is not None and plan.loader.efi_path == "\\EFI\\debian\\shimx64.efi"
    assert not plan.fallback_present
    assert "added (a copy of \\EFI\\debian\\shimx64.efi)" in "\n".join(plan.summary())
    customize_disk(plan)
    boot = subprocess.run(
        ["mtype", "-i", esp, "::/EFI/BOOT/BOOTX64.EFI"], capture_output=True, check=True
    )
    grub = subprocess.run(
        ["mtype", "-i", esp, "::/EFI/BOOT/grubx64.efi"], capture_output=True, check=True
    )
    assert boot.stdout == cd.SHIM and grub.stdout == cd.GRUB
    sh("fsck.vfat", "-n", esp)
    again = plan_customize(dev, CustomizeOptions(add_fallback=True), MACHINE)
    assert again.fallback_present


def test_boot_entry_refused_off_uefi(loopdev: Callable[..., str]) -> None:
    from bootmedia.customize import efi

    if efi.booted_by_uefi():
        pytest.skip("this host was booted by UEFI: the refusal cannot be shown here")
    dev, _, _ = linux_disk(loopdev, "ext4")
    with pytest.raises(Refused, match="not booted by UEFI"):
        plan_customize(dev, CustomizeOptions(boot_entry=True), MACHINE)


def test_hooks_get_the_disk_and_a_failure_fails(
    loopdev: Callable[..., str], tmp_path: Path
) -> None:
    dev, esp, root = linux_disk(loopdev, "ext4")
    seen = tmp_path / "env"
    ok = tmp_path / "10-ok"
    ok.write_text(f"#!/bin/sh\nenv | grep ^BOOTMEDIA_ | sort > {seen}\necho hello from hook\n")
    ok.chmod(0o755)
    bad = tmp_path / "20-bad"
    bad.write_text("#!/bin/sh\necho broken >&2\nexit 3\n")
    bad.chmod(0o755)
    plan = plan_customize(dev, CustomizeOptions(rule=make_rule("h1"), hooks=(str(ok),)), MACHINE)
    result = customize_disk(plan)
    env = dict(line.split("=", 1) for line in seen.read_text().splitlines())
    assert env["BOOTMEDIA_DISK"] == dev
    assert env["BOOTMEDIA_PART1"] == esp and env["BOOTMEDIA_PART2"] == root
    assert env["BOOTMEDIA_LINUX_ROOT"] == root and env["BOOTMEDIA_HOSTNAME"] == "h1"
    assert "hello from hook" in result.hook_output
    plan = plan_customize(dev, CustomizeOptions(hooks=(str(ok), str(bad))), MACHINE)
    with pytest.raises(BootmediaError, match=r"hook .*20-bad failed \(exit 3\): broken"):
        customize_disk(plan)
    noexec = tmp_path / "30-noexec"
    noexec.write_text("#!/bin/sh\n")
    with pytest.raises(UsageError, match="not executable"):
        plan_customize(dev, CustomizeOptions(hooks=(str(noexec),)), MACHINE)


# ---- Windows ------------------------------------------------------------------------------


def windows_disk(loopdev: Callable[..., str], generalized: bool = False) -> tuple[str, str]:
    dev = loopdev(120 * MiB)
    esp, win = cd.partitions(dev, [(34, cd.ESP), (0, cd.BASIC_DATA)])
    cd.make_esp(esp, {"EFI/Microsoft/Boot/bootmgfw.efi": cd.BOOTMGFW})
    cd.make_windows_volume(win, generalized=generalized)
    return dev, win


def copy_hive_out(node: str, dest: Path) -> Path:
    with tempfile.TemporaryDirectory() as mnt:
        sh("mount", "-t", "ntfs-3g", "-o", "ro", node, mnt)
        try:
            dest.write_bytes((Path(mnt) / "Windows/System32/config/SYSTEM").read_bytes())
        finally:
            sh("umount", mnt)
    return dest


def test_windows_name_in_the_hive_on_ntfs(loopdev: Callable[..., str], tmp_path: Path) -> None:
    dev, win = windows_disk(loopdev)
    opts = CustomizeOptions(rule=make_rule("PC-{serial}"))
    plan = plan_customize(dev, opts, MACHINE)
    assert plan.windows is not None and plan.windows.computer_name == "GOLDEN"
    assert plan.windows.control_sets == ("ControlSet001", "ControlSet002")
    assert not plan.windows.generalized
    text = "\n".join(plan.summary())
    assert "ComputerName 'GOLDEN' -> 'PC-SN-4711'" in text
    assert "NOT generalized" in text
    assert any("NOT generalized with sysprep" in w for w in plan.warnings)

    customize_disk(plan)

    hive = copy_hive_out(win, tmp_path / "SYSTEM")
    reg = cd.reged_export(hive, tmp_path / "out.reg")  # chntpw's parser, not hivex
    for cs in ("ControlSet001", "ControlSet002"):
        for key in ("ComputerName", "ActiveComputerName"):
            block = reg.split(f"[HKEY_LOCAL_MACHINE\\SYSTEM\\{cs}\\Control\\ComputerName\\{key}]")[
                1
            ]
            assert block.split("\n[")[0].strip().splitlines()[0] == '"ComputerName"="PC-SN-4711"'
        tcpip = reg.split(f"[HKEY_LOCAL_MACHINE\\SYSTEM\\{cs}\\Services\\Tcpip\\Parameters]")[1]
        tcpip = tcpip.split("\n[")[0]
        assert '"Hostname"="PC-SN-4711"' in tcpip and '"NV Hostname"="PC-SN-4711"' in tcpip
        assert '"Domain"=""' in tcpip  # the rest of the key is untouched
    # hivex's own exporter agrees, and ntfs-3g's volume is still clean.
    export = subprocess.run(
        ["hivexregedit", "--export", str(hive), "\\ControlSet001\\Control\\ComputerName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert '"ComputerName"=hex(1):50,00,43,00' in export
    sh("ntfsfix", "-n", win)


def test_generalized_windows_has_no_warning(loopdev: Callable[..., str]) -> None:
    dev, _ = windows_disk(loopdev, generalized=True)
    plan = plan_customize(
        dev, CustomizeOptions(rule=make_rule("PC-{serial}"), machines=40), MACHINE
    )
    assert plan.windows is not None and plan.windows.generalized
    assert "IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE" in "\n".join(plan.summary())
    assert plan.warnings == ()


def test_windows_names_are_refused_not_shortened(loopdev: Callable[..., str]) -> None:
    dev, _ = windows_disk(loopdev)
    with pytest.raises(UsageError, match="at most 15"):
        plan_customize(dev, CustomizeOptions(rule=make_rule("accounting-laptop-7")), MACHINE)
    with pytest.raises(UsageError, match="characters a Windows computer name may not have"):
        plan_customize(dev, CustomizeOptions(rule=make_rule("pc_7")), MACHINE)


def test_dirty_hive_is_refused(loopdev: Callable[..., str]) -> None:
    dev, win = windows_disk(loopdev)
    with tempfile.TemporaryDirectory() as mnt:
        sh("mount", "-t", "ntfs-3g", win, mnt)
        hive = Path(mnt) / "Windows/System32/config/SYSTEM"
        data = bytearray(hive.read_bytes())
        data[4] += 1  # primary sequence number ahead of the secondary: not closed cleanly
        hive.write_bytes(bytes(data))
        sh("umount", mnt)
    with pytest.raises(BootmediaError, match="not closed cleanly"):
        plan_customize(dev, CustomizeOptions(rule=make_rule("pc7")), MACHINE)


def test_cli_customize(loopdev: Callable[..., str], capsys: pytest.CaptureFixture[str]) -> None:
    dev, _, root = linux_disk(loopdev, "ext4")
    assert main(["customize", dev, "--hostname", "bad_name!", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bootmedia: error: 'bad_name!' is not an RFC 1123 hostname")
    assert len(err.strip().splitlines()) == 1
    assert main(["customize", dev, "--hostname", "kiosk1", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "/etc/hostname: 'golden' -> 'kiosk1'" in out and "Command: bootmedia customize" in out
    assert cd.read_ext4(root, "/etc/hostname") == "golden\n"  # a dry run writes nothing
    name = Path(dev).name
    assert main(["customize", dev, "--hostname", "kiosk1", "--confirm", name, "-q"]) == 0
    assert "customized" in capsys.readouterr().out
    assert cd.read_ext4(root, "/etc/hostname") == "kiosk1\n"


def test_apply_with_hostname_pattern_and_counter(
    loopdev: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """apply --hostname 'lab-{n:02}': the name is checked before the restore, {n} is claimed in
    the repository, and the restored disk carries the name."""
    src, _, _ = linux_disk(loopdev, "ext4")
    repo = tmp_path / "repo"
    assert main(["capture", src, str(repo), "--name", "golden", "-q"]) == 0
    dst = loopdev(420 * MiB)
    name = Path(dst).name
    # A name Linux refuses stops apply before anything is written.
    rc = main(["apply", str(repo), "golden", dst, "--confirm", name, "--hostname", "lab_{n}", "-q"])
    assert rc == 2
    assert "not an RFC 1123 hostname" in capsys.readouterr().err
    with open(dst, "rb") as f:
        assert f.read(1 << 20) == bytes(1 << 20)
    assert main(["apply", str(repo), "golden", dst, "--hostname", "lab-{n:02}", "--dry-run"]) == 0
    assert "Then customize: name 'lab-01'" in capsys.readouterr().out
    args = ["apply", str(repo), "golden", dst, "--confirm", name, "--hostname", "lab-{n:02}"]
    assert main([*args, "--new-ssh-keys", "-q"]) == 0
    out = capsys.readouterr().out
    assert "customized" in out and "Linux hostname 'lab-01'" in out
    root = f"{dst}p2"
    assert cd.read_ext4(root, "/etc/hostname") == "lab-01\n"
    assert cd.read_ext4(root, "/etc/machine-id") == ""
    claims = sorted(p.name for p in (repo / "counters" / "lab-_n_02_").iterdir())
    assert claims == ["000001.claim"]
    assert main([*args, "--no-verify", "-q"]) == 2
    assert "after a verified restore" in capsys.readouterr().err
