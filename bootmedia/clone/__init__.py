"""Disk-to-disk clone: the used blocks straight across, onto a smaller or larger disk.

plan = plan_clone("/dev/sda", "/dev/sdb", layout="fit")   # refuses before any write
print("\n".join(plan.summary()))                         # every partition's old/new place
result = clone_disk(plan, reporter)                      # read back and checked
"""

from bootmedia.clone.job import CloneResult, clone_disk
from bootmedia.clone.plan import ClonePart, ClonePlan, plan_clone

__all__ = ["ClonePart", "ClonePlan", "CloneResult", "clone_disk", "plan_clone"]
