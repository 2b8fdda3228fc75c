"""The engine and the CLI never need Textual: import them (and run the CLI) with textual
blocked from import, the way a minimal live system or a server would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

BLOCKER = """
import importlib.abc, sys

class NoTextual(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "textual" or name.startswith("textual."):
            raise ImportError(f"textual is blocked in this test ({name})")
        return None

sys.meta_path.insert(0, NoTextual())
"""

CORE = [
    "bootmedia",
    "bootmedia.cli",
    "bootmedia.progress",
    "bootmedia.errors",
    "bootmedia.run",
    "bootmedia.lab",
    "bootmedia.demo",
    "bootmedia.disks",
    "bootmedia.repo.store",
    "bootmedia.capture",
    "bootmedia.apply",
    "bootmedia.verify",
    "bootmedia.wipe",
    "bootmedia.unattended",
    "bootmedia.commands.tui",
]


def run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_blocker_works() -> None:
    proc = run_blocked("import textual")
    assert proc.returncode != 0 and "textual is blocked" in proc.stderr


def test_core_imports_and_cli_runs_without_textual() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {CORE!r}:\n"
        "    importlib.import_module(name)\n"
        "assert not any(m == 'textual' or m.startswith('textual.') for m in sys.modules)\n"
        "from bootmedia.cli import build_parser\n"
        "parser = build_parser()\n"
        "assert parser.parse_args(['tui', '--demo']).demo\n"
        "print('ok')\n"
    )
    proc = run_blocked(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_cli_help_lists_tui_without_textual() -> None:
    proc = run_blocked(
        "import sys; from bootmedia.cli import main; sys.argv=['bootmedia','--help']; main(['--help'])"
    )
    assert "tui" in proc.stdout, proc.stderr
