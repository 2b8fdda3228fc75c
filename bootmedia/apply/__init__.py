"""Restore an image onto a disk, an image file, or one partition onto an existing partition.

plan = plan_apply(repo, "golden", "/dev/sdb")      # UsageError/Refused before any write
print("\n".join(plan.summary()))                   # --dry-run; plan.command() is the CLI argv
check_confirmed(plan, "4C53")                      # CLI: --confirm names disk, file or partition's disk
result = apply_image(plan, reporter)               # result.verified: every byte read back

The order of writes (docs/FORMAT.md) makes an interrupted restore look incomplete, never good.
A writer that gets the data another way (bootmedia.cast) ends the same way: mark_incomplete,
its own writes, verify_written, recreate_swap, write_partition_table, finish_restore.
"""

from bootmedia.apply.check import check_image
from bootmedia.apply.job import (
    BOOT_CODE,
    DEFER_BELOW,
    ApplyResult,
    apply_image,
    finish_restore,
    mark_incomplete,
    recreate_swap,
    verify_written,
    write_partition_table,
)
from bootmedia.apply.plan import ApplyPlan, check_confirmed, plan_apply

__all__ = [
    "BOOT_CODE",
    "DEFER_BELOW",
    "ApplyPlan",
    "ApplyResult",
    "apply_image",
    "check_confirmed",
    "check_image",
    "finish_restore",
    "mark_incomplete",
    "plan_apply",
    "recreate_swap",
    "verify_written",
    "write_partition_table",
]
