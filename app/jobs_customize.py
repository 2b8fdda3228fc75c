"""A restore job followed by customize: the restore's Job with the customize lines added to its
summary, its command and its run. The name is checked before the restore starts."""

from __future__ import annotations

import shlex
from dataclasses import replace
from typing import Any

from app.engine import DiskRow, ImageRow
from app.jobs import Job, Outcome
from bootmedia.customize import CustomizeOptions, customize_disk, plan_customize, precheck
from bootmedia.customize.names import counter_dir_for, make_rule
from bootmedia.errors import BootmediaError
from bootmedia.progress import Reporter


def customize_options(image: ImageRow, fields: dict[str, Any]) -> CustomizeOptions:
    """The customize screen's answers as engine options ({n} counted in the image's repo)."""
    hostname = fields.get("hostname") or None
    rule = make_rule(
        hostname,
        fields.get("names_csv") or None,
        counter_dir=counter_dir_for(hostname, image.repo)
        if hostname and "{n" in hostname
        else None,
    )
    return CustomizeOptions(
        rule=rule,
        reset_machine_id=bool(fields.get("reset_machine_id", True)),
        remove_ssh_keys=bool(fields.get("new_ssh_keys")),
        boot_entry=bool(fields.get("boot_entry")),
        add_fallback=bool(fields.get("add_fallback")),
        image=image.name,
    )


def with_customize(job: Job, image: ImageRow, target: DiskRow, fields: dict[str, Any]) -> Job:
    options = customize_options(image, fields)
    fstypes = {a.fstype for a in image.manifest.areas if a.fstype}
    machine = fields.get("machine")
    name = precheck(fstypes, options, machine)  # a bad name refuses here, on the summary screen
    extra = ["Then, on the restored disk (each change read back):"]
    if name:
        extra.append(f"  name '{name}'")
    if options.reset_machine_id:
        extra.append("  Linux: new machine-id at first boot")
    if options.remove_ssh_keys:
        extra.append("  Linux: new SSH host keys at first boot")
    if options.boot_entry:
        extra.append("  UEFI: boot entry for the disk's loader, first in BootOrder")
    if options.add_fallback:
        extra.append("  UEFI: \\EFI\\BOOT\\BOOTX64.EFI where missing")

    def execute(reporter: Reporter) -> Outcome:
        outcome = job.execute(reporter)
        if not outcome.ok:
            return outcome
        try:
            plan = plan_customize(target.disk.path, options, machine)
            result = customize_disk(plan, reporter)
        except BootmediaError as exc:
            # The restore itself stands (read back and checked); say exactly what did not.
            return Outcome(
                False,
                "Restored and verified, but customizing FAILED",
                (*outcome.lines, f"Customize: {exc}"),
            )
        return Outcome(
            True,
            outcome.title + "; machine customized",
            (*outcome.lines, *plan.summary(), *result.lines()),
        )

    return replace(
        job,
        summary=(*job.summary, *extra),
        command=f"{job.command} {shlex.join(options.argv())}".strip(),
        execute=execute,
    )
