"""What customizing a restored disk will change, found and checked before the first write."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, replace
from typing import Any

from bootmedia import blockdev
from bootmedia.customize import efi, linux, windows
from bootmedia.customize.hooks import check_hook
from bootmedia.customize.names import (
    Machine,
    NameRule,
    check_name,
    peek_counter,
    read_machine,
    render,
)
from bootmedia.disks import Disk, check_writable, find_disk
from bootmedia.errors import Refused, UsageError
from bootmedia.run import require_tools
from bootmedia.tools import blkid, partx


@dataclass(frozen=True)
class CustomizeOptions:
    """What the technician asked for (CLI flags, TUI options, unattended keys)."""

    rule: NameRule | None = None
    reset_machine_id: bool = True
    remove_ssh_keys: bool = False
    boot_entry: bool = False
    add_fallback: bool = False
    hooks: tuple[str, ...] = ()
    root: str | None = None  # the Linux root partition, when the disk holds several systems
    machines: int = 1  # how many machines this image is deployed to (the sysprep warning)
    image: str = ""  # the image restored, for hooks and the log

    @property
    def wanted(self) -> bool:
        return bool(
            self.rule or self.remove_ssh_keys or self.boot_entry or self.add_fallback
        ) or bool(self.hooks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.to_dict() if self.rule else None,
            "reset_machine_id": self.reset_machine_id,
            "remove_ssh_keys": self.remove_ssh_keys,
            "boot_entry": self.boot_entry,
            "add_fallback": self.add_fallback,
            "hooks": list(self.hooks),
            "root": self.root,
            "machines": self.machines,
            "image": self.image,
        }

    def argv(self) -> list[str]:
        """These options as command-line flags (shared by customize and apply)."""
        out: list[str] = []
        r = self.rule
        if r is not None:
            out += ["--names-csv", r.value] if r.kind == "csv" else ["--hostname", r.value]
            if r.prefix:
                out += ["--prefix", r.prefix]
            if r.counter_dir:
                out += ["--counter-dir", r.counter_dir]
        if not self.reset_machine_id:
            out.append("--keep-machine-id")
        if self.remove_ssh_keys:
            out.append("--new-ssh-keys")
        if self.boot_entry:
            out.append("--boot-entry")
        if self.add_fallback:
            out.append("--add-fallback")
        for h in self.hooks:
            out += ["--hook", h]
        if self.root:
            out += ["--root", self.root]
        if self.machines != 1:
            out += ["--machines", str(self.machines)]
        return out


@dataclass(frozen=True)
class CustomizePlan:
    disk: Disk
    options: CustomizeOptions
    machine: Machine
    name: str  # the name as planned ("" when none); with {n}, the number seen at planning
    number: int | None  # {n} as seen at planning; the job claims the real one
    os_kinds: tuple[str, ...]
    linux: linux.LinuxRoot | None
    windows: windows.WindowsSystem | None
    esp: str = ""
    esp_partuuid: str = ""
    esp_number: int = 0
    loader: efi.Loader | None = None
    fallback_present: bool = True
    hooks: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def summary(self) -> list[str]:
        o = self.options
        m = self.machine
        lines = [f"Customize {self.disk.label()}"]
        lines.append(
            "Machine: "
            + ", ".join(
                [
                    f"serial {m.serial or '(none)'}",
                    f"MAC {m.mac or '(none)'}",
                    *([f"asset {m.asset}"] if m.asset else []),
                ]
            )
        )
        if o.rule is not None:
            how = o.rule.describe()
            if self.number is not None:
                how += f"; {{n}} = {self.number} now, claimed in {o.rule.counter_dir} when it runs"
            lines.append(f"Name: '{self.name}' ({how})")
        if self.linux is not None:
            lx = self.linux
            where = lx.device + (f" subvolume {lx.subvol}" if lx.subvol else "")
            lines.append(
                f"Linux ({lx.os_name or 'unknown'}) on {where}, {lx.fstype}, found by {lx.how}:"
            )
            if self.name:
                lines.append(f"  /etc/hostname: '{lx.hostname}' -> '{self.name}'")
                old = lx.hosts_entry.strip() or "(no 127.0.1.1 line)"
                lines.append(f"  /etc/hosts: '{old}' -> '127.0.1.1 {self.name}'")
            if o.reset_machine_id:
                dbus = {
                    "file": "/var/lib/dbus/machine-id removed",
                    "symlink": "/var/lib/dbus/machine-id is a link to it (kept)",
                    "absent": "no /var/lib/dbus/machine-id",
                }[lx.dbus_id]
                lines.append(
                    f"  /etc/machine-id: emptied (now {lx.machine_id or 'empty'}; systemd "
                    f"makes a new one at first boot); {dbus}"
                )
            if o.remove_ssh_keys:
                lines.append(
                    f"  SSH host keys: {len(lx.ssh_keys)} files removed; "
                    "`ssh-keygen -A` makes new ones at first boot"
                )
        if self.windows is not None:
            w = self.windows
            if self.name:
                lines.append(
                    f"Windows on {w.device}: ComputerName '{w.computer_name}' -> "
                    f"'{self.name.upper()}', Hostname '{w.hostname}' -> '{self.name}' "
                    f"(in {', '.join(w.control_sets)})"
                )
            else:
                lines.append(f"Windows on {w.device}: ComputerName '{w.computer_name}' (kept)")
            state = "generalized (sysprep)" if w.generalized else "NOT generalized"
            lines.append(
                f"  Image: {state}"
                + (f" ({'; '.join(w.sysprep_evidence)})" if w.sysprep_evidence else "")
            )
        if o.boot_entry and self.loader:
            lines.append(
                f"UEFI: boot entry '{self.loader.label}' -> {self.loader.efi_path} on "
                f"{self.esp} (partition {self.esp_partuuid}), first in BootOrder, read back"
            )
        if self.loader and (o.add_fallback or o.boot_entry):
            if self.fallback_present:
                lines.append("  Fallback \\EFI\\BOOT\\BOOTX64.EFI: present")
            elif o.add_fallback:
                lines.append(
                    f"  Fallback \\EFI\\BOOT\\BOOTX64.EFI: added (a copy of {self.loader.efi_path})"
                )
            else:
                lines.append(
                    "  Fallback \\EFI\\BOOT\\BOOTX64.EFI: MISSING (another machine will not boot "
                    "this disk; --add-fallback copies the loader there)"
                )
        for h in self.hooks:
            lines.append(f"Hook: {h} (runs last; its failure fails the job)")
        lines += [f"Warning: {w}" for w in self.warnings]
        lines.append("Every change is read back after the edit.")
        return lines

    def command(self) -> list[str]:
        target = self.disk.by_id[0] if self.disk.by_id else self.disk.path
        return ["bootmedia", "customize", target, *self.options.argv()]

    def command_line(self) -> str:
        return shlex.join(self.command())

    def to_dict(self) -> dict[str, Any]:
        return {
            "disk": self.disk.path,
            "serial": self.disk.serial,
            "options": self.options.to_dict(),
            "machine": self.machine.to_dict(),
            "name": self.name,
            "number": self.number,
            "os": list(self.os_kinds),
            "linux": self.linux.to_dict() if self.linux else None,
            "windows": self.windows.to_dict() if self.windows else None,
            "esp": self.esp,
            "loader": self.loader.to_dict() if self.loader else None,
            "fallback_present": self.fallback_present,
            "hooks": list(self.hooks),
            "warnings": list(self.warnings),
            "command": self.command(),
        }


def sysprep_warning(w: windows.WindowsSystem | None, options: CustomizeOptions) -> str:
    many = options.machines > 1 or (options.rule is not None and options.rule.per_machine)
    if w is None or w.generalized or not many:
        return ""
    return (
        "this Windows image was NOT generalized with sysprep, and it is going to more than one "
        "machine: they will share one machine SID and identity (run sysprep /generalize "
        "before capturing)"
    )


def _probed(disk: Disk) -> Disk:
    """The disk with what udev did not (yet) say about a partition read by blkid itself:
    right after a restore, udev's database can still miss a partition's filesystem."""
    parts = []
    for p in disk.partitions:
        if p.fstype and p.part_type:
            parts.append(p)
            continue
        found = blkid.probe(p.path, strict=False)
        parts.append(
            replace(
                p,
                fstype=p.fstype or found.get("TYPE", ""),
                uuid=p.uuid or found.get("UUID", ""),
                label=p.label or found.get("LABEL", ""),
                part_type=p.part_type or found.get("PART_ENTRY_TYPE", ""),
                part_uuid=p.part_uuid or found.get("PART_ENTRY_UUID", ""),
            )
        )
    return replace(disk, partitions=tuple(parts))


def plan_customize(
    target: str, options: CustomizeOptions, machine: Machine | None = None
) -> CustomizePlan:
    """Inspect the restored disk (read-only mounts) and check everything before any write."""
    if not os.path.exists(target):
        raise UsageError(f"{target}: no such disk")
    if not blockdev.is_block(target):
        raise UsageError(f"{target}: not a block device (attach an image file with losetup -P)")
    partx.settle(os.path.realpath(target))  # the restore just closed it: udev re-reads it
    disk = _probed(find_disk(target))
    check_writable(disk)
    machine = machine or read_machine()
    tools = ["mount", "umount"]
    if options.boot_entry or options.add_fallback:
        tools += ["mdir", "mtype", "mcopy", "mmd"]
    if options.boot_entry:
        tools.append("efibootmgr")
    require_tools(*tools)
    hooks = tuple(check_hook(h) for h in options.hooks)

    lx: linux.LinuxRoot | None
    if options.root:
        part = next((p for p in disk.partitions if p.path == options.root), None)
        if part is None:
            raise UsageError(f"--root {options.root} is not a partition of {disk.path}")
        lx = linux.inspect_root(part)
    else:
        lx = linux.find_root(disk.partitions)
    win = windows.find_windows(disk.partitions)
    kinds = tuple(k for k, found in (("linux", lx), ("windows", win)) if found)

    name, number = "", None
    if options.rule is not None:
        if not kinds:
            raise UsageError(f"{disk.path}: no Linux root and no Windows system found to rename")
        if options.rule.uses_counter:
            number = peek_counter(options.rule.counter_dir, machine)
        name = render(options.rule, machine, number)
        check_name(name, kinds)

    esp_node, partuuid, esp_no, loader, present = "", "", 0, None, True
    if options.boot_entry or options.add_fallback:
        esp = efi.find_esp(disk.partitions)
        if esp is None:
            raise UsageError(f"{disk.path}: no EFI system partition (FAT, type ESP) on the disk")
        files = efi.esp_files(esp.path)
        loader = efi.find_loader(files)
        if loader is None:
            raise UsageError(
                f"{esp.path}: no known OS loader on the ESP (Windows Boot Manager, shim, GRUB, "
                "systemd-boot)"
            )
        present = efi.has_fallback(files)
        esp_node, partuuid, esp_no = esp.path, esp.part_uuid, esp.number
    if options.boot_entry:
        if not efi.booted_by_uefi():
            raise Refused(
                "this machine was not booted by UEFI: its firmware boot entries cannot be "
                "written from here (boot the stick in UEFI mode)"
            )
        if disk.partition_table != "gpt" or not partuuid:
            raise UsageError(f"{disk.path}: a UEFI boot entry needs a GPT disk")

    warnings = []
    if w := sysprep_warning(win, options):
        warnings.append(w)
    if options.boot_entry and not present and not options.add_fallback:
        warnings.append(
            "the ESP has no \\EFI\\BOOT\\BOOTX64.EFI: only this machine's entry boots it"
        )
    if not options.wanted and not options.reset_machine_id:
        raise UsageError("nothing to do: give --hostname, --names-csv, --boot-entry or --hook")
    return CustomizePlan(
        disk=disk,
        options=options,
        machine=machine,
        name=name,
        number=number,
        os_kinds=kinds,
        linux=lx,
        windows=win,
        esp=esp_node,
        esp_partuuid=partuuid,
        esp_number=esp_no,
        loader=loader,
        fallback_present=present,
        hooks=hooks,
        warnings=tuple(warnings),
    )


def os_kinds_of(fstypes: set[str]) -> tuple[str, ...]:
    """Which OS rules a name must pass, from the filesystems an image holds."""
    kinds = []
    if fstypes & set(linux.LINUX_FS):
        kinds.append("linux")
    if "ntfs" in fstypes:
        kinds.append("windows")
    return tuple(kinds)


def precheck(fstypes: set[str], options: CustomizeOptions, machine: Machine | None = None) -> str:
    """Before a restore: check what can be checked without the restored disk. Returns the name.

    So `bootmedia apply --hostname` refuses a bad name, a missing hook or a boot entry on a
    BIOS-booted machine before it overwrites anything.
    """
    machine = machine or read_machine()
    require_tools("mount", "umount", *(["efibootmgr"] if options.boot_entry else []))
    for h in options.hooks:
        check_hook(h)
    if options.boot_entry and not efi.booted_by_uefi():
        raise Refused(
            "this machine was not booted by UEFI: its firmware boot entries cannot be "
            "written from here (boot the stick in UEFI mode, or leave out --boot-entry)"
        )
    if options.rule is None:
        return ""
    kinds = os_kinds_of(fstypes)
    if not kinds:
        raise UsageError("the image holds no Linux or Windows filesystem to give a name to")
    n = peek_counter(options.rule.counter_dir, machine) if options.rule.uses_counter else None
    name = render(options.rule, machine, n)
    check_name(name, kinds)
    return name
