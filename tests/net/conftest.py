"""Fixtures of the network tests: a namespace per test, real servers started inside it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bootmedia import lab
from bootmedia.capture import capture_image, plan_capture
from tests import sample
from tests.net.netns import Netns, why_not
from tests.net.servers import (
    Nginx,
    PasswordSshd,
    Smbd,
    Sshd,
    start_nginx,
    start_password_sshd,
    start_smbd,
    start_sshd,
)

WHY_NOT = why_not()
needs_netns = pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT or "network namespaces missing")


@pytest.fixture
def netns() -> Iterator[Netns]:
    if WHY_NOT:
        pytest.skip(WHY_NOT)
    ns = Netns()
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def sshd(netns: Netns, tmp_path: Path) -> Sshd:
    return start_sshd(netns, tmp_path / "sshd")


@pytest.fixture
def password_sshd(netns: Netns, tmp_path: Path) -> PasswordSshd:
    return start_password_sshd(netns, tmp_path / "sshd-pw")


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """The directory nginx serves (tests put a repository in it)."""
    path = tmp_path / "www"
    path.mkdir()
    return path


@pytest.fixture
def golden(loopdev, served: Path) -> tuple[str, tuple[lab.SamplePart, ...], dict]:
    """A disk captured into served/repo (what the web server publishes)."""
    src = loopdev(128 << 20)
    layout = sample.build(src, "gpt")
    capture_image(plan_capture(src, served / "repo", "golden"))
    return src, layout, sample.sums(src, layout)


@pytest.fixture
def nginx(netns: Netns, tmp_path: Path, served: Path) -> Nginx:
    return start_nginx(netns, tmp_path / "nginx", served)


@pytest.fixture
def smbd(netns: Netns, tmp_path: Path) -> Smbd:
    share = tmp_path / "share"
    share.mkdir()
    return start_smbd(netns, tmp_path / "smbd", share)
