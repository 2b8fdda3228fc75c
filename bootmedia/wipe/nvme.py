"""NVMe Format (with a secure-erase setting) and Sanitize, through nvme-cli's JSON output.

FOG ran `nvme format` without --ses for three years: that changes nothing on the media and
reports success. Here a format ALWAYS carries --ses (1 = user-data erase, 2 = crypto erase),
keeps the namespace's current LBA format (so the sector size cannot change under the user),
and the result is still checked by reading the disk back (wipe/verify.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bootmedia.errors import BootmediaError

Runner = Callable[..., Any]  # bootmedia.run.run, or a fake with recorded outputs in tests

# Identify Controller fields (NVMe base spec): OACS bit 1 = Format NVM supported; FNA bit 1 =
# secure erase applies to all namespaces, bit 2 = crypto erase supported; SANICAP bits 0..2 =
# crypto erase, block erase, overwrite.
OACS_FORMAT = 1 << 1
FNA_SES_ALL_NS = 1 << 1
FNA_CRYPTO = 1 << 2
SANICAP_CRYPTO, SANICAP_BLOCK, SANICAP_OVERWRITE = 1 << 0, 1 << 1, 1 << 2
# Sanitize Action values for `nvme sanitize --sanact`.
SANACT_BLOCK, SANACT_OVERWRITE, SANACT_CRYPTO = 2, 3, 4
# Sanitize Status (SSTAT bits 2:0) in the sanitize log.
SSTAT_NEVER, SSTAT_DONE, SSTAT_RUNNING, SSTAT_FAILED, SSTAT_DONE_NO_DEALLOC = 0, 1, 2, 3, 4


@dataclass(frozen=True)
class NvmeCaps:
    controller: str  # /dev/nvme0
    namespace: str  # /dev/nvme0n1
    model: str
    serial: str
    format_supported: bool
    crypto_erase: bool
    ses_all_namespaces: bool
    sanitize: tuple[str, ...]  # "block", "crypto", "overwrite"
    lbaf: int  # LBA format in use, kept by the format
    lba_size: int


def controller_of(namespace: str) -> str:
    """/dev/nvme0n1 -> /dev/nvme0 (the admin commands Sanitize and Identify go there)."""
    match = re.fullmatch(r"(/dev/nvme\d+)n\d+", namespace)
    if not match:
        raise BootmediaError(f"{namespace}: not an NVMe namespace")
    return match.group(1)


def _json(runner: Runner, argv: list[str]) -> dict[str, Any]:
    out = runner(argv).stdout
    try:
        data = json.loads(out)
    except ValueError as exc:
        raise BootmediaError(f"{' '.join(argv)}: unreadable output ({exc})") from None
    if not isinstance(data, dict):
        raise BootmediaError(f"{' '.join(argv)}: unexpected output")
    return data


def probe(namespace: str, runner: Runner, controller: str | None = None) -> NvmeCaps:
    ctrl = controller or controller_of(namespace)
    idc = _json(runner, ["nvme", "id-ctrl", ctrl, "--output-format=json"])
    ids = _json(runner, ["nvme", "id-ns", namespace, "--output-format=json"])
    oacs, fna, sanicap = (int(idc.get(k, 0)) for k in ("oacs", "fna", "sanicap"))
    lbaf = int(ids.get("flbas", 0)) & 0xF  # low nibble: index of the format in use
    formats = ids.get("lbafs") or []
    ds = int(formats[lbaf].get("ds", 9)) if lbaf < len(formats) else 9
    sanitize = [
        name
        for bit, name in ((SANICAP_BLOCK, "block"), (SANICAP_CRYPTO, "crypto"))
        if sanicap & bit
    ]
    if sanicap & SANICAP_OVERWRITE:
        sanitize.append("overwrite")
    return NvmeCaps(
        controller=ctrl,
        namespace=namespace,
        model=str(idc.get("mn", "")).strip(),
        serial=str(idc.get("sn", "")).strip(),
        format_supported=bool(oacs & OACS_FORMAT),
        crypto_erase=bool(fna & FNA_CRYPTO),
        ses_all_namespaces=bool(fna & FNA_SES_ALL_NS),
        sanitize=tuple(sanitize),
        lbaf=lbaf,
        lba_size=1 << ds,
    )


def format_command(caps: NvmeCaps, crypto: bool | None = None) -> list[str]:
    """nvme format with a secure-erase setting, never without one.

    crypto=None picks crypto erase where the controller supports it (instant, and it also
    covers blocks the controller has remapped), else user-data erase.
    """
    use_crypto = caps.crypto_erase if crypto is None else crypto
    if use_crypto and not caps.crypto_erase:
        raise BootmediaError(f"{caps.namespace}: the controller does not support crypto erase")
    ses = 2 if use_crypto else 1
    # --force skips nvme-cli's 10-second "are you sure" countdown: bootmedia asked already.
    return ["nvme", "format", caps.namespace, f"--ses={ses}", f"--lbaf={caps.lbaf}", "--force"]


def sanitize_command(caps: NvmeCaps) -> list[str]:
    """Block erase where supported, else crypto erase, else overwrite (slowest)."""
    if not caps.sanitize:
        raise BootmediaError(f"{caps.controller}: the controller does not support sanitize")
    sanact = {"block": SANACT_BLOCK, "crypto": SANACT_CRYPTO, "overwrite": SANACT_OVERWRITE}
    return ["nvme", "sanitize", caps.controller, f"--sanact={sanact[caps.sanitize[0]]}"]


def sanitize_log_command(controller: str) -> list[str]:
    return ["nvme", "sanitize-log", controller, "--output-format=json"]


def parse_sanitize_log(text: str | bytes) -> tuple[int, float]:
    """(status, fraction done) from `nvme sanitize-log -o json`.

    nvme-cli 2.x nests the log under the controller name and prints SSTAT as an object whose
    "status" reads "(1) Most Recent Sanitize Command Completed Successfully."; 1.x printed a
    flat object with SSTAT as a number. Both are accepted.
    """
    data = json.loads(text)
    if isinstance(data, dict) and "sprog" not in data and len(data) == 1:
        data = next(iter(data.values()))
    if not isinstance(data, dict) or "sprog" not in data:
        raise BootmediaError("nvme sanitize-log: unexpected output")
    sstat = data.get("sstat", 0)
    if isinstance(sstat, dict):
        text_status = " ".join(str(v) for v in sstat.values() if isinstance(v, str))
        match = re.search(r"\((\d+)\)", text_status)
        status = int(match.group(1)) if match else -1
    else:
        status = int(sstat) & 0x7
    return status, int(data["sprog"]) / 65536


SSTAT_WORDS = {
    SSTAT_NEVER: "no sanitize has ever run",
    SSTAT_DONE: "completed successfully",
    SSTAT_RUNNING: "in progress",
    SSTAT_FAILED: "FAILED",
    SSTAT_DONE_NO_DEALLOC: "completed successfully (without deallocation)",
}
