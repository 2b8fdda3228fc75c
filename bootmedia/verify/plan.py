"""The verify plan: which repository and which images; verify reads and never writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootmedia.repo.store import Repository


@dataclass(frozen=True)
class VerifyPlan:
    repo: Path
    image: str | None  # None: every image in the repository

    @property
    def what(self) -> str:
        return f"image {self.image}" if self.image else f"every image in {self.repo}"

    def summary(self) -> list[str]:
        return [
            f"Read every chunk of {self.what} and check it against its hash,",
            "and check every manifest and extent map.",
            f"Repository: {self.repo}",
            "Nothing is written.",
        ]

    def command(self) -> list[str]:
        return ["bootmedia", "verify", str(self.repo), *([self.image] if self.image else [])]

    def to_dict(self) -> dict[str, Any]:
        return {"job": "verify", "repo": str(self.repo), "image": self.image}


def plan_verify(repo: str | Path, image: str | None = None) -> VerifyPlan:
    """Open the repository and resolve IMAGE (a name or a number) before anything is read."""
    repo = Path(repo)
    with Repository.open(repo) as r:
        name = r.image(image).name if image is not None else None
    return VerifyPlan(repo, name)
