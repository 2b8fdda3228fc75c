"""Target layouts: the table to write when the target disk is not the image's size.

plan = plan_layout(image.table, {a.number: PartInfo.from_area(a) for a in image.partitions},
                   target_size, target_sector, policy="fit", sizes={3: REST})
print("\n".join(plan.summary()))   # every partition's old/new start and size, what grows/shrinks
render_sfdisk(plan.table)          # bootmedia.table writes it
"""

from bootmedia.layout.plan import (
    FIT,
    KEEP,
    POLICIES,
    REST,
    Change,
    LayoutPlan,
    PartInfo,
    minimum,
    parse_size,
    plan_layout,
    role,
)

__all__ = [
    "FIT",
    "KEEP",
    "POLICIES",
    "REST",
    "Change",
    "LayoutPlan",
    "PartInfo",
    "minimum",
    "parse_size",
    "plan_layout",
    "role",
]
