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
