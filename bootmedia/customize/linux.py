"""A restored Linux system: find its root, and set its name and identity offline.

What changes, and why each is enough:
  /etc/hostname        the name systemd and Debian's hostname.sh set at boot;
  /etc/hosts           the 127.0.1.1 line Debian's installer writes, so the name resolves;
  /etc/machine-id      emptied, not removed: systemd then makes a new id at first boot (a
                       missing file breaks a read-only /etc; an empty one never does);
  /var/lib/dbus/machine-id
                       removed when it is a file of its own (D-Bus falls back to
                       /etc/machine-id); left alone when it is the usual symlink to it;
  /etc/ssh/ssh_host_*  removed on request, with a first-boot unit running `ssh-keygen -A`,
                       because Debian's sshd does not make missing keys by itself.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, replace
from typing import Any

from bootmedia.customize.mount import mounted, open_dir, read_at, write_at
from bootmedia.disks.model import Partition
from bootmedia.errors import BootmediaError, UsageError

GPT_LINUX_ROOT_X86_64 = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
LINUX_FS = ("ext4", "ext3", "ext2", "btrfs", "xfs")
KEYGEN_UNIT = "bootmedia-ssh-keygen.service"
KEYGEN_TEXT = """\
# Written by bootmedia customize: this machine's SSH host keys were removed after a restore.
[Unit]
Description=Generate SSH host keys removed by bootmedia
Before=ssh.service sshd.service
ConditionPathExists=/usr/bin/ssh-keygen

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class LinuxRoot:
    """The root filesystem of a restored Linux system, as found before any write."""

    device: str
    fstype: str
    subvol: str  # btrfs subvolume holding the root ("" = top level)
    os_name: str  # PRETTY_NAME from os-release
    hostname: str  # what /etc/hostname says now
    machine_id: str  # what /etc/machine-id says now ("" when empty)
    dbus_id: str  # "file", "symlink" or "absent"
    ssh_keys: tuple[str, ...]  # names of the host key files in /etc/ssh
    hosts_entry: str  # the 127.0.1.1 line of /etc/hosts ("" when none)
    how: str  # how it was identified: "fstab", "partition type", "only Linux system"

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "fstype": self.fstype,
            "subvol": self.subvol,
            "os": self.os_name,
            "hostname": self.hostname,
            "machine_id": self.machine_id,
            "dbus_machine_id": self.dbus_id,
            "ssh_keys": list(self.ssh_keys),
            "hosts_entry": self.hosts_entry,
            "found_by": self.how,
        }


def _os_release(root: str) -> str:
    for rel in ("etc", "usr/lib"):
        with contextlib.suppress(OSError, BootmediaError):
            dfd = open_dir(root, rel)
            try:
                data = read_at(dfd, "os-release")
            finally:
                os.close(dfd)
            if data is None:
                continue
            fields = dict(
                line.split("=", 1)
                for line in data.decode(errors="replace").splitlines()
                if "=" in line
            )
            return fields.get("PRETTY_NAME", fields.get("NAME", "Linux")).strip().strip('"')
    return ""


def _etc_text(root: str, name: str) -> str | None:
    try:
        dfd = open_dir(root, "etc")
    except FileNotFoundError:
        return None
    try:
        data = read_at(dfd, name)
    finally:
        os.close(dfd)
    return None if data is None else data.decode(errors="replace")


def fstab_root(text: str) -> str:
    """The device spec fstab mounts on / ("UUID=...", "/dev/sda2"...), "" when none."""
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[1] == "/":
            return fields[0]
    return ""


def _spec_matches(spec: str, p: Partition) -> bool:
    key, _, value = spec.partition("=")
    value = value.strip('"')
    if key == "UUID":
        return value.lower() == p.uuid.lower()
    if key == "PARTUUID":
        return value.lower() == p.part_uuid.lower()
    if key == "LABEL":
        return value == p.label
    if key == "PARTLABEL":
        return value == p.part_name
    return False


def _subvolumes(top: str) -> list[str]:
    """Top-level directories of a btrfs that hold a system (Ubuntu's @, openSUSE's @/.snapshots)."""
    out = []
    for name in sorted(os.listdir(top)):
        path = os.path.join(top, name)
        if not os.path.islink(path) and os.path.isdir(path) and _os_release(path):
            out.append(name)
    return out


def _inspect(p: Partition) -> list[tuple[LinuxRoot, bool]]:
    """Linux systems on a partition, each with whether its fstab names this partition as /."""
    found: list[tuple[LinuxRoot, bool]] = []
    with mounted(p.path, p.fstype) as top:
        places = [""] if _os_release(top) else []
        if p.fstype == "btrfs" and not places:
            places = _subvolumes(top)
        for sub in places:
            root = os.path.join(top, sub) if sub else top
            fstab = _etc_text(root, "fstab") or ""
            spec = fstab_root(fstab)
            hostname = (_etc_text(root, "hostname") or "").strip()
            hosts = _etc_text(root, "hosts") or ""
            entry = next(
                (ln for ln in hosts.splitlines() if ln.split("#")[0].split()[:1] == ["127.0.1.1"]),
                "",
            )
            machine_id = (_etc_text(root, "machine-id") or "").strip()
            dbus = "absent"
            with contextlib.suppress(FileNotFoundError):
                dfd = open_dir(root, "var/lib/dbus")
                try:
                    st = os.stat("machine-id", dir_fd=dfd, follow_symlinks=False)
                    dbus = "symlink" if stat.S_ISLNK(st.st_mode) else "file"
                except FileNotFoundError:
                    pass
                finally:
                    os.close(dfd)
            keys: tuple[str, ...] = ()
            with contextlib.suppress(FileNotFoundError):
                dfd = open_dir(root, "etc/ssh")
                try:
                    keys = tuple(sorted(n for n in os.listdir(dfd) if n.startswith("ssh_host_")))
                finally:
                    os.close(dfd)
            found.append(
                (
                    LinuxRoot(
                        device=p.path,
                        fstype=p.fstype,
                        subvol=sub,
                        os_name=_os_release(root),
                        hostname=hostname,
                        machine_id=machine_id,
                        dbus_id=dbus,
                        ssh_keys=keys,
                        hosts_entry=entry,
                        how="fstab",
                    ),
                    bool(spec) and _spec_matches(spec, p),
                )
            )
    return found


def find_root(partitions: tuple[Partition, ...]) -> LinuxRoot | None:
    """The one Linux root on a disk: fstab's / first, then the GPT root type, then the only one.

    Several systems that none of those rules can tell apart are refused: which one to rename is
    the technician's decision (`--root PART`).
    """
    systems: list[tuple[LinuxRoot, bool, Partition]] = []
    for p in partitions:
        if p.fstype in LINUX_FS:
            systems += [(r, own, p) for r, own in _inspect(p)]
    if not systems:
        return None
    by_fstab = [r for r, own, _ in systems if own]
    if len(by_fstab) == 1:
        return by_fstab[0]
    typed = [r for r, _, p in systems if p.part_type.lower() == GPT_LINUX_ROOT_X86_64]
    if len(typed) == 1:
        return _with_how(typed[0], "partition type")
    if len(systems) == 1:
        return _with_how(systems[0][0], "only Linux system on the disk")
    names = ", ".join(
        f"{r.device}{'/' + r.subvol if r.subvol else ''} ({r.os_name})" for r, _, _ in systems
    )
    raise UsageError(f"several Linux systems on the disk ({names}): choose one with --root")


def _with_how(r: LinuxRoot, how: str) -> LinuxRoot:
    return replace(r, how=how)


def inspect_root(p: Partition) -> LinuxRoot:
    systems = _inspect(p)
    if len(systems) != 1:
        raise UsageError(f"{p.path}: {'no' if not systems else 'more than one'} Linux system on it")
    return _with_how(systems[0][0], "chosen with --root")


def hosts_with_name(text: str, name: str) -> str:
    """/etc/hosts with its 127.0.1.1 line naming `name` (added after 127.0.0.1 when absent)."""
    short = name.split(".", 1)[0]
    entry = f"127.0.1.1\t{name}" + (f"\t{short}" if short != name else "")
    lines = text.splitlines()
    out, done = [], False
    for line in lines:
        if line.split("#", 1)[0].split()[:1] == ["127.0.1.1"]:
            if not done:
                out.append(entry)
                done = True
            continue
        out.append(line)
    if not done:
        at = next((i + 1 for i, ln in enumerate(out) if ln.split()[:1] == ["127.0.0.1"]), len(out))
        out.insert(at, entry)
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class LinuxEdit:
    hostname: str | None
    reset_machine_id: bool
    remove_ssh_keys: bool


def apply_edit(root: LinuxRoot, edit: LinuxEdit) -> None:
    """Mount read-write, edit, unmount. Refuses symlinks everywhere on the way."""
    with mounted(root.device, root.fstype, write=True, subvol=root.subvol) as mnt:
        etc = open_dir(mnt, "etc")
        try:
            if edit.hostname is not None:
                write_at(etc, "hostname", (edit.hostname + "\n").encode())
                hosts = read_at(etc, "hosts")
                new = hosts_with_name(
                    hosts.decode(errors="replace") if hosts else "", edit.hostname
                )
                write_at(etc, "hosts", new.encode())
            if edit.reset_machine_id:
                write_at(etc, "machine-id", b"", mode=0o444)
        finally:
            os.close(etc)
        if edit.reset_machine_id and root.dbus_id == "file":
            dfd = open_dir(mnt, "var/lib/dbus")
            try:
                os.unlink("machine-id", dir_fd=dfd)
                os.fsync(dfd)
            finally:
                os.close(dfd)
        if edit.remove_ssh_keys and root.ssh_keys:
            dfd = open_dir(mnt, "etc/ssh")
            try:
                for name in root.ssh_keys:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=dfd)
                os.fsync(dfd)
            finally:
                os.close(dfd)
            _install_keygen(mnt)


def _install_keygen(mnt: str) -> None:
    try:
        units = open_dir(mnt, "etc/systemd/system")
    except FileNotFoundError:
        return  # not systemd: its init scripts are its own business
    try:
        write_at(units, KEYGEN_UNIT, KEYGEN_TEXT.encode())
        with contextlib.suppress(FileExistsError):
            os.mkdir("multi-user.target.wants", 0o755, dir_fd=units)
        wants = os.open(
            "multi-user.target.wants", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=units
        )
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(KEYGEN_UNIT, dir_fd=wants)
            os.symlink(f"/etc/systemd/system/{KEYGEN_UNIT}", KEYGEN_UNIT, dir_fd=wants)
            os.fsync(wants)
        finally:
            os.close(wants)
    finally:
        os.close(units)


def read_back(root: LinuxRoot) -> LinuxRoot:
    """Mount read-only again and read what is there now."""
    systems = [
        r
        for r, _ in _inspect(
            Partition(name="", path=root.device, number=0, size=0, fstype=root.fstype)
        )
        if r.subvol == root.subvol
    ]
    if not systems:
        raise BootmediaError(f"{root.device}: the Linux system is gone after the edit")
    return systems[0]


def check_edit(before: LinuxRoot, after: LinuxRoot, edit: LinuxEdit) -> list[str]:
    """Every difference between what was asked and what was read back, in words."""
    problems = []
    if edit.hostname is not None:
        if after.hostname != edit.hostname:
            problems.append(f"/etc/hostname reads '{after.hostname}', not '{edit.hostname}'")
        if after.hosts_entry.split()[1:2] != [edit.hostname]:
            problems.append(f"/etc/hosts has no 127.0.1.1 line for '{edit.hostname}'")
    if edit.reset_machine_id and after.machine_id:
        problems.append("/etc/machine-id is not empty")
    if edit.reset_machine_id and before.dbus_id == "file" and after.dbus_id != "absent":
        problems.append("/var/lib/dbus/machine-id is still there")
    if edit.remove_ssh_keys and after.ssh_keys:
        problems.append(f"SSH host keys still there: {', '.join(after.ssh_keys)}")
    return problems
