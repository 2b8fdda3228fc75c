"""Issue 13 item 7: scripts/demo.sh installs only when something changed, and keeps the
installer's output in a log (the UI comes up on a clean screen). Run on a copy of the script in
a scratch tree whose deps.sh and bootmedia are stand-ins that say when they ran."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tree(tmp_path: Path, deps_ok: bool = True) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "demo.sh", tmp_path / "scripts" / "demo.sh")
    deps = tmp_path / "scripts" / "deps.sh"
    body = "mkdir -p .venv/bin\nprintf '#!/bin/sh\\necho TUI-STARTED \"$@\"\\n' > .venv/bin/bootmedia\n"
    body += "chmod +x .venv/bin/bootmedia\n"
    body += 'for i in $(seq 1 200); do echo "pip: building wheel, warning $i"; done\n'
    deps.write_text(
        "#!/bin/sh\necho DEPS-RAN >> deps-runs\n" + body + ("" if deps_ok else "exit 3\n")
    )
    deps.chmod(0o755)
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return tmp_path


def demo(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(root / "scripts" / "demo.sh"), "--reset"],
        capture_output=True,
        text=True,
        env={**os.environ},
        check=False,
    )


def runs(root: Path) -> int:
    path = root / "deps-runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_demo_installs_once_quietly(tmp_path: Path) -> None:
    root = tree(tmp_path)
    first = demo(root)
    assert first.returncode == 0, first.stderr
    assert runs(root) == 1
    assert "warning" not in first.stdout + first.stderr  # pip's pages are in the log
    assert first.stdout.splitlines()[-1] == "TUI-STARTED tui --demo --reset"
    assert "warning 200" in (root / ".venv" / "demo-install.log").read_text()
    again = demo(root)
    assert runs(root) == 1 and again.stdout.strip() == "TUI-STARTED tui --demo --reset"
    time.sleep(1.1)
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\nversion = '2'\n")
    demo(root)
    assert runs(root) == 2  # something changed: installed again


def test_a_failed_install_says_where_the_log_is(tmp_path: Path) -> None:
    root = tree(tmp_path, deps_ok=False)
    out = demo(root)
    assert out.returncode == 1 and "TUI-STARTED" not in out.stdout
    assert "the install failed" in out.stderr and "demo-install.log" in out.stderr
    assert len(out.stderr.splitlines()) <= 32  # the tail, not pages
