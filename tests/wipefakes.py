"""A fake runner for NVMe admin and ATA security commands, fed with recorded tool outputs.

It answers only the commands it was given and fails the test on anything else, so a test can
never send a real admin command to a real drive by accident.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bootmedia.errors import ToolError

FIXTURES = Path(__file__).parent / "fixtures"
Answer = bytes | str | Callable[[], Any] | list[Any] | ToolError


def fixture(rel: str) -> bytes:
    return (FIXTURES / rel).read_bytes()


class FakeRunner:
    def __init__(self, answers: dict[tuple[str, ...], Answer]) -> None:
        self.answers = dict(answers)
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        key = tuple(argv)
        if key not in self.answers:
            raise AssertionError(f"unexpected command: {' '.join(argv)}")
        self.calls.append(list(argv))
        answer = self.answers[key]
        if isinstance(answer, list):  # successive answers (sanitize-log while it runs)
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, ToolError):
            raise answer
        if callable(answer):
            answer = answer() or b""
        out = answer.encode() if isinstance(answer, str) else answer
        return subprocess.CompletedProcess(argv, 0, out, b"")


def nvme_answers(
    namespace: str, controller: str, id_ctrl: str, id_ns: str = "id-ns-512.json"
) -> dict[tuple[str, ...], Answer]:
    return {
        ("nvme", "id-ctrl", controller, "--output-format=json"): fixture(f"nvme/{id_ctrl}"),
        ("nvme", "id-ns", namespace, "--output-format=json"): fixture(f"nvme/{id_ns}"),
    }
