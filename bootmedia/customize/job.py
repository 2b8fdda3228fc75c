"""Carry out a CustomizePlan: each change is made, then read back from the disk and checked.

Order: the name is settled first (the {n} claim, and its check against each OS's rules), so a
bad name stops the job before anything is written; then Linux, Windows, the ESP's fallback
loader, the NVRAM entry, and last the hooks. A job stopped half-way leaves each finished step
complete (files are replaced by rename, the hive is committed whole) and says in the log which
steps ran; running it again is safe, as every step is idempotent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from bootmedia.customize import efi, linux, windows
from bootmedia.customize.hooks import hook_env, run_hook
from bootmedia.customize.names import check_name, claim_counter, render
from bootmedia.customize.plan import CustomizePlan
from bootmedia.disks import check_writable
from bootmedia.errors import BootmediaError, ToolError
from bootmedia.progress import Reporter

log = logging.getLogger("bootmedia.customize")


@dataclass(frozen=True)
class Change:
    what: str
    checked: str  # how it was read back

    def to_dict(self) -> dict[str, str]:
        return {"what": self.what, "checked": self.checked}


@dataclass(frozen=True)
class CustomizeResult:
    disk: str
    name: str
    changes: tuple[Change, ...]
    warnings: tuple[str, ...]
    boot_entry: str = ""  # "Boot0004" when made
    hook_output: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "disk": self.disk,
            "name": self.name,
            "changes": [c.to_dict() for c in self.changes],
            "warnings": list(self.warnings),
            "boot_entry": self.boot_entry,
        }

    def summary_line(self) -> str:
        bits = [f"name {self.name}"] if self.name else []
        if self.boot_entry:
            bits.append(f"UEFI {self.boot_entry}")
        return ", ".join(bits) + (", " if bits else "") + f"{len(self.changes)} changes read back"

    def lines(self) -> list[str]:
        out = [f"{c.what}: {c.checked}" for c in self.changes]
        return out + [f"warning: {w}" for w in self.warnings]


def customize_disk(plan: CustomizePlan, reporter: Reporter | None = None) -> CustomizeResult:
    reporter = reporter or Reporter()
    o = plan.options
    changes: list[Change] = []
    check_writable(plan.disk)
    name = plan.name
    if o.rule is not None and o.rule.uses_counter:
        with reporter.step("Claiming a number"):
            n = claim_counter(o.rule.counter_dir, plan.machine, job=o.image)
            name = render(o.rule, plan.machine, n)
            check_name(name, plan.os_kinds)
            changes.append(Change(f"{{n}} = {n}", f"claim file in {o.rule.counter_dir}"))

    if plan.linux is not None and (name or o.reset_machine_id or o.remove_ssh_keys):
        lx = plan.linux
        edit = linux.LinuxEdit(name or None, o.reset_machine_id, o.remove_ssh_keys)
        with reporter.step(f"Editing Linux on {lx.device}"):
            linux.apply_edit(lx, edit)
        with reporter.step("Reading Linux back"):
            after = linux.read_back(lx)
            problems = linux.check_edit(lx, after, edit)
            if problems:
                raise BootmediaError(f"{lx.device}: read back failed: {'; '.join(problems)}")
        how = f"read back from {lx.device} mounted read-only"
        if name:
            changes.append(Change(f"Linux hostname '{name}' (/etc/hostname, /etc/hosts)", how))
        if o.reset_machine_id:
            changes.append(Change("Linux /etc/machine-id emptied", how))
        if o.remove_ssh_keys:
            changes.append(Change(f"{len(lx.ssh_keys)} SSH host key files removed", how))

    if plan.windows is not None and name:
        w = plan.windows
        with reporter.step(f"Editing the Windows SYSTEM hive on {w.device}"):
            windows.apply_name(w, name)
        with reporter.step("Reading the hive back"):
            got = windows.read_back(w)
            want = windows.expected_names(name)
            bad = [f"{cs}: {got[cs]}" for cs in w.control_sets if got.get(cs) != want]
            if bad:
                raise BootmediaError(f"{w.device}: hive read back differs: {'; '.join(bad)}")
        changes.append(
            Change(
                f"Windows computer name '{name.upper()}' in {', '.join(w.control_sets)}",
                f"hive re-opened from {w.device} mounted read-only",
            )
        )

    loader = plan.loader
    if loader is not None and o.add_fallback and not plan.fallback_present:
        with reporter.step(f"Adding the fallback loader on {plan.esp}"):
            files = efi.esp_files(plan.esp)
            written = efi.add_fallback(plan.esp, loader, files)
        changes.append(
            Change(
                f"fallback {', '.join(written)} (copy of {loader.efi_path})", "read back with mtype"
            )
        )

    entry = ""
    if loader is not None and o.boot_entry:
        esp = next(p for p in plan.disk.partitions if p.path == plan.esp)
        with reporter.step("Creating the UEFI boot entry"):
            made, state = efi.create_entry(plan.disk.path, esp, loader)
        entry = f"Boot{made.number}"
        changes.append(
            Change(
                f"UEFI {entry} '{made.label}' -> {made.loader}, first in BootOrder "
                f"({','.join(state.order)})",
                "read back with efibootmgr -v",
            )
        )

    output: list[str] = []
    if plan.hooks:
        parts = {p.number: p.path for p in plan.disk.partitions}
        env = hook_env(
            plan.disk.path,
            parts,
            linux_root=plan.linux.device if plan.linux else "",
            windows=plan.windows.device if plan.windows else "",
            esp=plan.esp,
            hostname=name,
            image=o.image,
        )
        for hook in plan.hooks:
            with reporter.step(f"Running hook {hook}"):
                try:
                    output += run_hook(hook, env)
                except ToolError as exc:
                    tail = " | ".join(exc.stderr.strip().splitlines()[-3:])
                    raise BootmediaError(
                        f"hook {hook} failed (exit {exc.returncode}){': ' + tail if tail else ''}"
                    ) from None
            changes.append(Change(f"hook {hook}", "exit status 0"))
    result = CustomizeResult(
        disk=plan.disk.path,
        name=name,
        changes=tuple(changes),
        warnings=plan.warnings,
        boot_entry=entry,
        hook_output=tuple(output),
    )
    for c in result.changes:
        log.info("customized: %s (%s)", c.what, c.checked)
    return result
