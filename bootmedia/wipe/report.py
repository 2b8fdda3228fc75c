"""The wipe report: what was erased, how, with which commands, when, and what the read-back found.

Written as JSON (for asset systems) and plain text (to print and file). A report never claims
"erased" unless the read-back passed, and never for the quick wipe, which leaves the data in
place: its status says what it did (signatures removed, data still readable).
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bootmedia import __version__
from bootmedia.progress import human_bytes, human_duration, human_size

OK = "erased and verified"
QUICK = "signatures removed, data still readable"  # quick: tables gone, the data is not
NOT_VERIFIED = "ERASE NOT VERIFIED"
INCONCLUSIVE = "erase ran, verification inconclusive"
FAILED = "FAILED"
CANCELLED = "CANCELLED"


@dataclass
class WipeReport:
    disk: dict[str, Any]  # identity: model, vendor, serial, wwn, size, by_id, transport, path
    method: str
    secure: bool
    started: str  # ISO 8601, UTC
    finished: str = ""
    seconds: float = 0.0
    bytes_written: int = 0
    commands: list[str] = field(default_factory=list)  # exactly what ran, in order
    verification: dict[str, Any] = field(default_factory=dict)
    status: str = FAILED
    error: str = ""
    notes: list[str] = field(default_factory=list)
    host: str = field(default_factory=socket.gethostname)
    tool: str = f"bootmedia {__version__}"

    @property
    def ok(self) -> bool:
        return self.status in (OK, QUICK)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def to_text(self) -> str:
        d = self.disk
        v = self.verification
        lines = [
            "bootmedia wipe report",
            "=" * 21,
            f"status:        {self.status}",
            f"disk:          {d.get('label', '')}",
            f"model:         {' '.join(x for x in (d.get('vendor'), d.get('model')) if x) or '-'}",
            f"serial:        {d.get('serial') or '-'}",
            f"wwn:           {d.get('wwn') or '-'}",
            f"size:          {human_size(d.get('size', 0))} ({d.get('size', 0)} bytes)",
            f"bus:           {d.get('transport', '')}  device {d.get('path', '')}",
        ]
        lines += [f"by-id:         {link}" for link in d.get("by_id", [])[:3]]
        lines += [
            f"method:        {self.method}{' (secure)' if self.secure else ''}",
            f"started:       {self.started}",
            f"finished:      {self.finished}",
            f"duration:      {human_duration(self.seconds)}",
        ]
        if self.bytes_written:
            rate = self.bytes_written / self.seconds if self.seconds else 0
            lines.append(
                f"written:       {human_bytes(self.bytes_written)} at {human_bytes(rate)}/s"
            )
        lines.append("commands:")
        lines += [f"  {c}" for c in self.commands] or ["  (none)"]
        if v:
            result = {True: "PASSED", False: "FAILED", None: "INCONCLUSIVE"}[v.get("passed")]
            lines.append(f"verification:  {result} ({v.get('method')}): {v.get('summary')}")
            lines.append(
                f"               {v.get('blocks')} blocks, {human_bytes(v.get('bytes_read', 0))} "
                f"read back, sample seed {v.get('seed')}"
            )
            lines += [f"               {f}" for f in v.get("failures", [])]
        else:
            lines.append("verification:  not run")
        if self.error:
            lines.append(f"error:         {self.error}")
        lines += [f"note:          {n}" for n in self.notes]
        lines.append(f"host:          {self.host} ({self.tool})")
        return "\n".join(lines) + "\n"

    def write(self, directory: str | Path) -> tuple[Path, Path]:
        """Write wipe-<serial or name>-<time>.json and .txt; returns both paths."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        who = re.sub(
            r"[^A-Za-z0-9._-]", "_", self.disk.get("serial") or self.disk.get("name", "disk")
        )
        stamp = re.sub(r"[^0-9T]", "", self.started.split("+")[0])[:15]
        base = f"wipe-{who}-{self.method}-{stamp}"
        n = 1
        while (directory / f"{base}.json").exists():  # two wipes in one second keep both reports
            n += 1
            base = f"wipe-{who}-{self.method}-{stamp}-{n}"
        json_path, text_path = directory / f"{base}.json", directory / f"{base}.txt"
        json_path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        text_path.write_text(self.to_text())
        return json_path, text_path
