"""bootmedia/ (the engine and the CLI) never imports Textual or app/, checked three ways:
import-linter's contract (pyproject.toml), every module imported in a fresh interpreter, and an
AST scan that also sees imports inside functions."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "bootmedia"
# `bootmedia tui` starts the app when it runs (never at import time): the one allowed door.
DOOR = {("bootmedia/commands/tui.py", "app.app"), ("bootmedia/commands/tui.py", "app.session")}


def engine_modules() -> list[str]:
    names = []
    for path in sorted(ENGINE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts))
    return names


def test_import_linter_contract_is_kept() -> None:
    pytest.importorskip("importlinter")
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run(
        [str(lint)], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 kept, 0 broken" in proc.stdout


def test_every_engine_module_imports_without_textual() -> None:
    names = engine_modules()
    assert len(names) > 40  # the walk found the tree, not an empty directory
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('textual', 'app'))\n"
        "print(bad)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def imported_names(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append(str(node.args[0].value))
    return found


def test_no_engine_source_names_textual_or_app() -> None:
    offenders = []
    for path in sorted(ENGINE.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        for name in imported_names(ast.parse(path.read_text(), rel)):
            top = name.split(".")[0]
            if top in ("textual", "app") and (rel, name) not in DOOR:
                offenders.append(f"{rel}: {name}")
    assert offenders == []


def test_the_scan_sees_imports_inside_functions() -> None:
    tree = ast.parse("def f():\n    from textual.app import App\n    import app.screens\n")
    assert imported_names(tree) == ["textual.app", "app.screens"]
