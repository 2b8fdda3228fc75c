"""Hostile review: a password typed into a repository URL never reaches the screen or the log,
whichever check refuses the URL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bootmedia.errors import UsageError
from bootmedia.net.url import parse_url, redact

SECRET = "s3cretPW"
HOSTILE = [
    f"http://bob:{SECRET}@127.0.0.1:9/repo",
    f"http://bob:{SECRET}@127.0.0.1:notaport/repo",  # the port check runs first
    f"http://bob:{SECRET}/x@127.0.0.1/repo",  # a '/' in the password ends the netloc early
    f"ftp://bob:{SECRET}@127.0.0.1/repo",  # unsupported scheme
    f"smb://bob:{SECRET}@server/share#frag",
    f"ssh://bob:p@{SECRET}@host/repo",  # a raw '@' inside the password
]


@pytest.mark.parametrize("url", HOSTILE)
def test_refused_url_never_shows_the_password(url: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_url(url)
    assert SECRET not in str(err.value)
    assert "\n" not in str(err.value)


def test_redact_keeps_urls_without_passwords() -> None:
    for text in ("ssh://bob@host/srv/images", "http://127.0.0.1:8080/repo", "/srv/images"):
        assert redact(text) == text
    assert redact(f"apply ssh://bob:{SECRET}@host/r img /dev/sdb") == (
        "apply ssh://bob:***@host/r img /dev/sdb"
    )


@pytest.mark.parametrize("url", HOSTILE[:2])
def test_cli_log_never_holds_the_password(tmp_path: Path, url: str) -> None:
    env = dict(os.environ, BOOTMEDIA_NO_TOOLS="1")
    root = Path(__file__).resolve().parent.parent
    res = subprocess.run(
        [sys.executable, "-m", "bootmedia", "--log-dir", str(tmp_path), "images", url],
        capture_output=True,
        text=True,
        cwd=root,
        env=env,
        timeout=60,
    )
    assert res.returncode == 2, res.stderr
    assert "bootmedia: error:" in res.stderr
    assert SECRET not in res.stdout + res.stderr
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    assert "images" in logs  # the command line is logged ...
    assert SECRET not in logs  # ... without the password
