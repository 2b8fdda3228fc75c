"""Repository discovery and delete in the engine: the CLI finds and deletes what the TUI does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bootmedia.errors import BootmediaError
from bootmedia.repo.discover import delete_image, find_repositories, is_repository
from bootmedia.repo.store import Repository


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "bootmedia", "--log-dir", "/tmp/bm-test-log", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def test_given_paths_are_found_once_and_only_repositories(tmp_path: Path) -> None:
    Repository.init(tmp_path / "a").close()
    (tmp_path / "not-a-repo").mkdir()
    found = find_repositories(
        [tmp_path / "a", tmp_path / "not-a-repo", tmp_path / "a"], mounted=False
    )
    assert found == [tmp_path / "a"]
    assert is_repository(tmp_path / "a") and not is_repository(tmp_path / "not-a-repo")


def test_bootmedia_repos_lists_what_it_finds(tmp_path: Path) -> None:
    Repository.init(tmp_path / "a").close()
    proc = cli("repos", str(tmp_path / "a"), "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {"path": str(tmp_path / "a"), "images": [], "error": "", "unreadable": 0} in rows


def test_delete_of_an_unknown_image_is_one_line(tmp_path: Path) -> None:
    Repository.init(tmp_path / "a").close()
    proc = cli("delete", str(tmp_path / "a"), "nope")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_delete_image_is_the_engines(tmp_path: Path) -> None:
    # The engine function the TUI and the CLI share; deleting a captured image through the CLI
    # is covered by the loop-device tests (test_engine_dedup).
    Repository.init(tmp_path / "a").close()
    with pytest.raises(BootmediaError):
        delete_image(tmp_path / "a", "nope")
