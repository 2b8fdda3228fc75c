"""ATA Security Erase through hdparm.

hdparm has no JSON output, so the Security section of `hdparm -I` is parsed here (the lines are
stable since hdparm 6). The two things that make this method fail quietly elsewhere are handled
loudly: a "frozen" drive (the BIOS froze security at boot) is reported with the way out, and a
drive that already has a password set is never touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The password only lives between SET PASS and ERASE UNIT: a successful erase clears it.
PASSWORD = "bootmedia"
FROZEN_HINT = "frozen: suspend and resume the machine, then try again"


@dataclass(frozen=True)
class AtaSecurity:
    supported: bool
    enabled: bool  # a user password is set
    locked: bool
    frozen: bool
    enhanced: bool  # ENHANCED SECURITY ERASE UNIT supported
    erase_minutes: int  # the drive's own estimate, 0 when unknown
    enhanced_minutes: int

    def refusal(self) -> str | None:
        """Why ATA secure erase cannot run now, or None."""
        if not self.supported:
            return "the drive does not support the ATA security feature set"
        if self.frozen:
            return FROZEN_HINT
        if self.locked:
            return "the drive is locked with a password bootmedia does not know"
        if self.enabled:
            return "a security password is already set on the drive (disable it first)"
        return None


def parse_security(text: str) -> AtaSecurity:
    """The Security: block of `hdparm -I`. Each state line reads "\\tnot\\tfrozen" or "\\t\\tfrozen"."""
    block: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("Security:"):
            inside = True
            continue
        if inside:
            if line and not line[0].isspace():
                break
            block.append(line.strip())

    def state(word: str) -> bool | None:
        for line in block:
            parts = line.split()
            if parts[-1:] == [word]:
                return parts[0] != "not"
        return None

    minutes = re.search(r"(\d+)min for SECURITY ERASE UNIT", text)
    enhanced_minutes = re.search(r"(\d+)min for ENHANCED SECURITY ERASE UNIT", text)
    return AtaSecurity(
        supported=bool(block) and state("supported") is True,
        enabled=state("enabled") is True,
        locked=state("locked") is True,
        frozen=state("frozen") is True,
        enhanced=any(line == "supported: enhanced erase" for line in block),
        erase_minutes=int(minutes.group(1)) if minutes else 0,
        enhanced_minutes=int(enhanced_minutes.group(1)) if enhanced_minutes else 0,
    )


def identify_command(device: str) -> list[str]:
    return ["hdparm", "-I", device]


def erase_commands(device: str, security: AtaSecurity) -> list[list[str]]:
    """Set a temporary user password, then ERASE UNIT (enhanced where the drive has it)."""
    erase = "--security-erase-enhanced" if security.enhanced else "--security-erase"
    return [
        ["hdparm", "--user-master", "u", "--security-set-pass", PASSWORD, device],
        ["hdparm", "--user-master", "u", erase, PASSWORD, device],
    ]


def unlock_hint(device: str) -> str:
    return (
        f"the drive may still have the user password {PASSWORD!r}; remove it with: "
        f"hdparm --user-master u --security-disable {PASSWORD} {device}"
    )


def timeout_for(security: AtaSecurity) -> float:
    """Seconds to wait for ERASE UNIT: the drive's estimate with room to spare."""
    minutes = security.enhanced_minutes if security.enhanced else security.erase_minutes
    return max(30 * 60, 3 * 60 * (minutes or 600))
