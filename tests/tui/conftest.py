"""TUI test fixtures: a real demo lab (loop devices, a real repository) and Pilot helpers."""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tui_helpers import CAN_LOOP, WHY_NOT, sparse_copy


@pytest.fixture(scope="session")
def lab_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo lab built once (sample disk + the captured 'golden' image), copied per test."""
    if not CAN_LOOP:
        pytest.skip(WHY_NOT)
    from bootmedia.demo import create_lab

    root = tmp_path_factory.mktemp("lab-template") / "lab"
    create_lab(root, say=None).close()
    return root


def _drop_leftover_leases(repo: Path) -> None:
    """No job runs yet in a fresh copy, so a lease in it naming this process is the template's
    capture's, released in the template but not yet written back into the copied stick image
    when the template's stick had to be unmounted lazily (seen now and then under load as
    "repository is busy" in a session's first TUI test). Those go; any other lease stays."""
    for lease in (repo / "locks").glob("*.lease"):
        try:
            info = json.loads(lease.read_text())
        except (OSError, ValueError):
            continue
        if info.get("pid") == os.getpid() and info.get("host") == (
            socket.gethostname() or "localhost"
        ):
            lease.unlink()


@pytest.fixture
def demo_lab(lab_template: Path, tmp_path: Path) -> Iterator[Any]:
    """A fresh copy of the lab, attached and mounted; detached at teardown."""
    from bootmedia.demo import create_lab

    root = tmp_path / "lab"
    shutil.copytree(lab_template, root, copy_function=sparse_copy)
    the_lab = create_lab(root, say=None)
    try:
        _drop_leftover_leases(the_lab.repo_path)
        yield the_lab
    finally:
        the_lab.close()


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Any]:
    from app.app import BootmediaApp
    from app.session import Session

    def make(the_lab: Any = None) -> BootmediaApp:
        log = tmp_path / "bootmedia.log"
        log.touch()
        return BootmediaApp(Session(log_path=log, lab=the_lab))

    return make
