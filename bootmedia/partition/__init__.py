"""Lay out a blank disk: plan (sfdisk script + mkfs commands), show it, apply it, check it.

plan = plan_partition(disk, "uefi")            # or "windows", "bios", "data", "my.toml"
print(plan.render())                           # --dry-run
result = apply_partition(plan, reporter)       # checked with sfdisk -J and blkid
"""

from bootmedia.partition.apply import CreatedPartition, PartitionResult, apply_partition
from bootmedia.partition.layouts import (
    BUILTIN,
    LAYOUTS,
    Layout,
    PartSpec,
    get_layout,
    load_layout_file,
)
from bootmedia.partition.plan import PartitionPlan, PlannedPartition, plan_layout, plan_partition

__all__ = [
    "BUILTIN",
    "LAYOUTS",
    "CreatedPartition",
    "Layout",
    "PartSpec",
    "PartitionPlan",
    "PartitionResult",
    "PlannedPartition",
    "apply_partition",
    "get_layout",
    "load_layout_file",
    "plan_layout",
    "plan_partition",
]
