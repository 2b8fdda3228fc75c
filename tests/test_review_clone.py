"""Hostile review: clone onto a second loop device over the source's own file (one disk seen
twice, as multipath or a double losetup shows it) wrote the source onto itself and said
'verified'. It must be refused before the first write."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from bootmedia.cli import main


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("alias", ["same", "hardlink"])
def test_clone_onto_an_alias_of_the_source_is_refused(
    tmp_path: Path,
    loopdev: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
    alias: str,
) -> None:
    img = tmp_path / "src.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["sfdisk", "-q", str(img)], input="label: gpt\n,40M,L\n", text=True, check=True)
    src = loopdev(img)
    subprocess.run(["partx", "-u", src], check=False)
    subprocess.run(["mkfs.ext4", "-q", "-F", f"{src}p1"], check=True)
    other = img
    if alias == "hardlink":
        other = tmp_path / "other-name.img"
        os.link(img, other)
    dst = loopdev(other)
    before = _digest(img)
    rc = main(["--log-dir", str(tmp_path / "log"), "clone", src, dst, "--confirm", Path(dst).name])
    err = capsys.readouterr().err
    assert rc != 0
    assert "same disk" in err, err
    assert _digest(img) == before  # nothing written, not even the incomplete mark
