"""The one protocol every job's plan follows: frozen, shown before anything is written, and
replayable from the CLI.

    plan.summary()   -> list[str]        what the technician reads and confirms
    plan.command()   -> list[str]        the equivalent CLI argv (`shell(plan)` joins it)
    plan.to_dict()   -> dict             the plan as JSON-able data (--json, logs, tests)
"""

from __future__ import annotations

import shlex
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Plan(Protocol):
    def summary(self) -> list[str]: ...

    def command(self) -> list[str]: ...

    def to_dict(self) -> dict[str, Any]: ...


def shell(plan: Plan) -> str:
    """The plan's command as one line a technician can paste into a shell."""
    return shlex.join(plan.command())
