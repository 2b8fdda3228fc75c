"""The bootmedia stick: write the live ISO to a USB stick and add a BOOTMEDIA data partition.

iso = inspect_iso(Path("out/bootmedia.iso"))   # UsageError: not a hybrid ISO
plan = plan_stick(iso, disk, "exfat")          # UsageError: too small, 4K sectors, no MBR slot
print("\n".join(plan.summary()))               # --dry-run; plan.command() is the CLI argv
result = make_stick(plan, reporter)            # the ISO read back, the partition checked

On the live system, bootmedia.stick.data names the data partition (DATA_LABEL, DATA_DIR) and
finds it (data_dir, ensure_data_mounted, reports_dir).
"""

from bootmedia.stick.data import (
    DATA_DIR,
    DATA_LABEL,
    RUN_DIR,
    data_dir,
    ensure_data_mounted,
    reports_dir,
)
from bootmedia.stick.job import StickResult, make_stick
from bootmedia.stick.plan import (
    DATA_FILESYSTEMS,
    GPT_TYPES,
    MBR_TYPES,
    IsoFacts,
    StickPlan,
    inspect_iso,
    plan_stick,
)

__all__ = [
    "DATA_DIR",
    "DATA_FILESYSTEMS",
    "DATA_LABEL",
    "GPT_TYPES",
    "MBR_TYPES",
    "RUN_DIR",
    "IsoFacts",
    "StickPlan",
    "StickResult",
    "data_dir",
    "ensure_data_mounted",
    "inspect_iso",
    "make_stick",
    "plan_stick",
    "reports_dir",
]
