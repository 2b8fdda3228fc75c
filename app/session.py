"""What the app knows for its whole run: demo lab or real machine, log path, repositories typed in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bootmedia.demo import DemoLab


@dataclass
class Session:
    log_path: Path
    lab: DemoLab | None = None  # demo mode: only the lab's disks, never the machine's
    extra_repos: list[Path] = field(default_factory=list)  # paths the technician typed in
    check_unattended: bool = False  # the live system: look for an unattended job at start
    # What the technician typed into a form (a repository path, a share's server and path),
    # offered again the next time the form opens in this session. Never a password.
    typed: dict[str, str] = field(default_factory=dict)

    @property
    def report_dir(self) -> Path:
        """Where wipe reports go: the lab, the stick's data partition, else beside the log."""
        if self.lab is not None:
            return self.lab.root / "reports"
        from bootmedia.stick.data import data_dir

        data = data_dir()
        if data is not None:
            return data / "reports"
        return self.log_path.parent / "reports"

    @property
    def demo(self) -> bool:
        return self.lab is not None

    def add_repo(self, path: Path) -> None:
        if path not in self.extra_repos:
            self.extra_repos.append(path)

    def remember(self, field_name: str, value: str) -> None:
        if "password" in field_name:
            raise ValueError("passwords are not remembered")
        self.typed[field_name] = value

    def recall(self, field_name: str) -> str:
        return self.typed.get(field_name, "")
