"""A restore's and a clone's summary say what on the target is overwritten, also when the target
shows no partition: before, "EVERYTHING on the target is overwritten:" was followed by nothing
(the next line was the new layout), which read as if something had been left out."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootmedia.apply import plan_apply
from bootmedia.capture import capture_image, plan_capture
from bootmedia.clone.plan import plan_clone
from tests import disklayouts as D

MiB = 1 << 20
pytestmark = pytest.mark.root
HEAD = "EVERYTHING on the target is overwritten"


def _target(loopdev, shows: str) -> str:
    dev = loopdev(64 * MiB)
    if shows == "gpt":
        D.sh("sfdisk", "-q", dev, input=b"label: gpt\n")
        D.rescan(dev)
    elif shows == "ext4":
        D.sh("mkfs.ext4", "-q", "-F", dev)
    elif shows == "parts":
        D.build(dev, "gpt", (D.Part(1, "vfat", D.BASIC, 0),))
    return dev


WANT = {
    "nothing": [f"{HEAD}: it shows no partition table and no filesystem (any data on it goes too)"],
    "gpt": [f"{HEAD}: its gpt partition table (it holds no partitions)"],
    "ext4": [f"{HEAD}: the ext4 filesystem on the whole disk"],
    "parts": [f"{HEAD}:", "  - {dev}p1 65.0 MB vfat 'P1'"],
}


@pytest.fixture
def source(loopdev, tmp_path: Path) -> tuple[str, Path]:
    src = loopdev(64 * MiB)
    D.build(src, "gpt", (D.Part(1, "ext4", D.LINUX, 0, fill_mib=2),))
    capture_image(plan_capture(src, tmp_path / "repo", "img"))
    return src, tmp_path / "repo"


def _said(summary: list[str], dev: str) -> list[str]:
    start = next(i for i, line in enumerate(summary) if line.startswith(HEAD))
    end = start + 1
    while end < len(summary) and summary[end].startswith("  - "):
        end += 1
    return [line.replace(Path(dev).name, "{dev}") for line in summary[start:end]]


@pytest.mark.parametrize("shows", list(WANT))
def test_restore_and_clone_say_what_the_target_holds(
    loopdev, source: tuple[str, Path], shows: str
) -> None:
    src, repo = source
    dev = _target(loopdev, shows)
    for summary in (plan_apply(repo, "img", dev).summary(), plan_clone(src, dev).summary()):
        assert _said(summary, dev) == WANT[shows], summary
