"""`bootmedia receive` onto an image file asks for --confirm like any other write (apply's
rule): the file's name. Run in a network namespace of its own: nothing can leave it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import root_only

ROOT = Path(__file__).resolve().parent.parent
pytestmark = root_only


@pytest.mark.parametrize("confirm", [None, "wrong.img"], ids=["none", "wrong"])
def test_receive_onto_an_image_file_needs_its_name(tmp_path: Path, confirm: str | None) -> None:
    target = tmp_path / "target.img"
    target.write_bytes(b"keep me\n" * 4096)
    before = target.read_bytes()
    argv = ["unshare", "-n", sys.executable, "-m", "bootmedia", "receive", str(target)]
    argv += ["--start-timeout", "1"] + (["--confirm", confirm] if confirm else [])
    r = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "confirm" in r.stderr and "target.img" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert target.read_bytes() == before
