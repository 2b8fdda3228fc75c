"""Unattended jobs: a stick (or a netboot entry) that restores a machine with no questions asked.

A job comes from the kernel command line (`bootmedia.job=restore bootmedia.image=NAME
bootmedia.target=RULE bootmedia.after=poweroff`) or from `bootmedia.toml` on the stick's data
partition::

    [job]
    action = "restore"
    image = "golden"          # image name in the repository
    repo = "images"           # optional: repository directory on the data partition
    target = "internal"       # a rule, see parse_rule()
    after = "poweroff"        # poweroff | reboot | stay
    countdown = 10            # seconds the technician has to cancel
    verify = true
    grow = true               # grow the last partition to fill a bigger disk

The kernel command line wins when it names a job; `bootmedia.job=off` ignores the stick's file.

The target is chosen by a rule, never by a kernel name (sda and nvme0n1 change between boots).
A rule that matches no disk or more than one stops the job with a message naming the disks: it
never guesses. The stick itself is never a candidate.

The package has the shape of every job::

    spec.py     JobSpec: the job as written (bootmedia.toml in UTF-8, or UTF-16/UTF-8 with a BOM
                as Notepad saves it; kernel parameters), checked whole before any countdown
    rules.py    target rules and the disk-safety check (a failed import stops the program)
    plan.py     resolve_job() -> UnattendedPlan (frozen: summary(), command(), to_dict())
    job.py      run_restore(plan, reporter) -> JobResult
    results.py  results/*.json on the stick, and the "already done" guard keyed by disk_key()
                (serial, else WWN, by-id, bus path, model+size), so a disk without a serial is
                guarded too

    plan = find_job()                    # None, an UnattendedPlan, or UnattendedError
    print("\\n".join(plan.summary()))     # what the countdown shows
    result = run_restore(plan, reporter)
    write_result(plan.data_dir, plan, result)

Everything but find_job()/load_job() (reading), write_result() and run_restore() is a pure
function of its inputs (the command line text, the file, the disk list).
"""

from __future__ import annotations

from bootmedia.unattended.base import (
    ACTIONS,
    AFTER,
    DATA_DIR,
    DATA_LABEL,
    EXTERNAL_TRANSPORTS,
    JOB_FILE,
    LIVE_LABEL,
    MAX_COUNTDOWN,
    RESULTS_DIR,
    AlreadyDone,
    UnattendedError,
)
from bootmedia.unattended.job import after_command, run_restore
from bootmedia.unattended.plan import (
    ResolvedJob,
    UnattendedPlan,
    find_job,
    find_repo,
    repo_has_image,
    resolve_job,
)
from bootmedia.unattended.results import (
    JobResult,
    claim_job,
    disk_key,
    find_success,
    machine_identity,
    result_document,
    write_result,
)
from bootmedia.unattended.rules import (
    RULE_HELP,
    Condition,
    Rule,
    default_refusal,
    is_boot_stick,
    parse_rule,
    parse_size,
    select_target,
)
from bootmedia.unattended.spec import (
    JobSpec,
    decode_job_file,
    job_from_cmdline,
    job_from_toml,
    load_job,
    parse_cmdline,
)

__all__ = [
    "ACTIONS",
    "AFTER",
    "DATA_DIR",
    "DATA_LABEL",
    "EXTERNAL_TRANSPORTS",
    "JOB_FILE",
    "LIVE_LABEL",
    "MAX_COUNTDOWN",
    "RESULTS_DIR",
    "RULE_HELP",
    "AlreadyDone",
    "Condition",
    "JobResult",
    "JobSpec",
    "ResolvedJob",
    "Rule",
    "UnattendedError",
    "UnattendedPlan",
    "after_command",
    "claim_job",
    "decode_job_file",
    "default_refusal",
    "disk_key",
    "find_job",
    "find_repo",
    "find_success",
    "is_boot_stick",
    "job_from_cmdline",
    "job_from_toml",
    "load_job",
    "machine_identity",
    "parse_cmdline",
    "parse_rule",
    "parse_size",
    "repo_has_image",
    "resolve_job",
    "result_document",
    "run_restore",
    "select_target",
    "write_result",
]
