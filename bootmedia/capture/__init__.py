"""Capture a disk (or an image file) into a repository: plan what to read, then read it.

plan = plan_capture("/dev/sda", repo, "golden")   # UsageError: mounted read-write, name taken ...
print("\n".join(plan.summary()))                 # --dry-run; plan.command() is the CLI argv
result = capture_image(plan, reporter)            # listed only once its manifest is committed
"""

from bootmedia.capture.job import CaptureResult, capture_image
from bootmedia.capture.plan import HEAD_SIZE, AreaPlan, CapturePlan, plan_capture

__all__ = ["HEAD_SIZE", "AreaPlan", "CapturePlan", "CaptureResult", "capture_image", "plan_capture"]
