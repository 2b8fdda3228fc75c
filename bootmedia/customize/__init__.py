"""After a restore, make each machine its own: name, machine identity, UEFI entry, hooks.

rule = make_rule(hostname="lab-{n:03}", counter_dir=repo / "counters" / "lab")
plan = plan_customize("/dev/sdb", CustomizeOptions(rule=rule, boot_entry=True))
print("\\n".join(plan.summary()))      # what changes, old -> new; warnings (sysprep...)
result = customize_disk(plan, reporter)  # every change read back from the disk, or an error
"""

from bootmedia.customize.job import Change, CustomizeResult, customize_disk
from bootmedia.customize.names import Machine, NameRule, make_rule, name_problem, read_machine
from bootmedia.customize.plan import CustomizeOptions, CustomizePlan, plan_customize, precheck

__all__ = [
    "Change",
    "CustomizeOptions",
    "CustomizePlan",
    "CustomizeResult",
    "Machine",
    "NameRule",
    "customize_disk",
    "make_rule",
    "name_problem",
    "plan_customize",
    "precheck",
    "read_machine",
]
