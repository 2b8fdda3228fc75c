"""Erase disks honestly: offer only what the device supports, read back, and report.

plan = plan_wipe(disk, "zero")         # UsageError when the method cannot run on the disk
print(plan.render())                   # what the technician confirms
report = wipe_disk(plan, reporter)     # report.ok only when the read-back passed
report.write(report_dir)               # JSON + text
"""

from bootmedia.wipe.job import wipe_disk
from bootmedia.wipe.plan import (
    HARDWARE,
    METHODS,
    MethodInfo,
    WipePlan,
    available_methods,
    plan_wipe,
)
from bootmedia.wipe.report import WipeReport
from bootmedia.wipe.verify import Verification

__all__ = [
    "HARDWARE",
    "METHODS",
    "MethodInfo",
    "Verification",
    "WipePlan",
    "WipeReport",
    "available_methods",
    "plan_wipe",
    "wipe_disk",
]
