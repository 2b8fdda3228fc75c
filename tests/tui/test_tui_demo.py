"""The demo lab: what it builds, that the machine's disks never show, and a clear no without root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tui_helpers import needs_loop

from app import engine
from app.session import Session
from bootmedia import demo, lab
from bootmedia.errors import BootmediaError


@pytest.mark.real_tools
def test_without_loop_devices_the_lab_is_image_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(lab, "can_use_loop", lambda: (False, "needs root to attach loop devices"))
    said: list[str] = []
    the_lab = demo.create_lab(tmp_path / "lab", say=said.append)
    try:
        assert not the_lab.use_loops and not the_lab.loops
        assert [d.transport for d in the_lab.disks()] == ["file", "file", "file"]
        assert the_lab.repo_path == tmp_path / "lab" / "repository"
        assert any("image files" in s for s in said)
    finally:
        the_lab.close()
    assert not (tmp_path / "lab" / "stick").exists()  # nothing to mount without root


@needs_loop
def test_the_lab_shows_only_its_own_disks(demo_lab: Any, tmp_path: Path) -> None:
    session = Session(log_path=tmp_path / "log", lab=demo_lab)
    rows = engine.list_disks(session)
    assert sorted(Path(r.disk.backing_file).name for r in rows) == [
        "newpc-1.img",
        "newpc-2.img",
        "reference.img",
        "stick.img",
    ]
    refused = {Path(r.disk.backing_file).name: r.refusal for r in rows}
    assert refused["stick.img"]  # the stand-in boot stick: mounted, holds the repository
    assert not refused["newpc-1.img"] and not refused["reference.img"]
    assert engine.find_repositories(session) == [demo_lab.repo_path]
    images = engine.list_images([demo_lab.repo_path])
    assert [i.name for i in images] == ["golden"]
    assert {a.fstype for a in images[0].manifest.partitions} >= {"vfat", "ext4", "ntfs"}


@needs_loop
def test_one_bootmedia_per_lab(demo_lab: Any) -> None:
    with pytest.raises(BootmediaError, match="in use by another bootmedia"):
        demo.create_lab(demo_lab.root, say=None)
    assert len(demo_lab.disks()) == 4  # still attached: a detached loop has no medium
