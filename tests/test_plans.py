"""Every job's plan has the one protocol (bootmedia.plan.Plan): summary() -> list[str],
command() -> list[str] (an argv, never a shell string), to_dict() -> dict."""

from __future__ import annotations

import typing
from typing import Any

import pytest

from bootmedia.apply import ApplyPlan
from bootmedia.capture import CapturePlan
from bootmedia.cast.receiver import ReceivePlan
from bootmedia.cast.sender import CastPlan
from bootmedia.clone.plan import ClonePlan
from bootmedia.customize.plan import CustomizePlan
from bootmedia.layout.choose import PartitionsPlan
from bootmedia.partition import PartitionPlan
from bootmedia.plan import Plan
from bootmedia.stick import StickPlan
from bootmedia.unattended.plan import UnattendedPlan
from bootmedia.verify import VerifyPlan, plan_verify
from bootmedia.wipe import WipePlan

PLANS = [
    ApplyPlan,
    CapturePlan,
    CastPlan,
    ClonePlan,
    CustomizePlan,
    PartitionPlan,
    PartitionsPlan,
    ReceivePlan,
    StickPlan,
    UnattendedPlan,
    VerifyPlan,
    WipePlan,
]


@pytest.mark.parametrize("cls", PLANS, ids=lambda c: c.__name__)
def test_every_plan_has_the_protocol(cls: Any) -> None:
    assert cls.__dataclass_params__.frozen
    for name, returns in (("summary", list[str]), ("command", list[str])):
        assert typing.get_type_hints(getattr(cls, name))["return"] == returns, name
    assert typing.get_type_hints(cls.to_dict)["return"] in (dict[str, Any], dict[str, object])


def test_a_verify_plan_end_to_end(tmp_path: Any) -> None:
    from bootmedia.repo.store import Repository

    Repository.init(tmp_path / "repo").close()
    plan = plan_verify(tmp_path / "repo")
    assert isinstance(plan, Plan)
    assert plan.command() == ["bootmedia", "verify", str(tmp_path / "repo")]
    assert plan.to_dict() == {"job": "verify", "repo": str(tmp_path / "repo"), "image": None}
    assert "Nothing is written." in plan.summary()
