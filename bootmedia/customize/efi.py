"""The UEFI boot entry for a restored disk: find its ESP's loader, create the NVRAM entry, check it.

The ESP is read and written with mtools (no mount: the live kernel may lack vfat, and mtools
touches nothing but the files it names). NVRAM goes through efibootmgr, whose own output after
`--create` is not trusted: the entry is read back with `efibootmgr -v` and must point at the
restored ESP's partition GUID and loader, first in BootOrder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bootmedia.disks.model import Partition
from bootmedia.errors import BootmediaError
from bootmedia.run import run, run_text

ESP_GPT = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
FALLBACK = "EFI/BOOT/BOOTX64.EFI"
# The loaders we know, best first: what the firmware entry should start.
LOADERS = (
    ("EFI/Microsoft/Boot/bootmgfw.efi", "Windows Boot Manager"),
    ("EFI/*/shimx64.efi", ""),
    ("EFI/*/grubx64.efi", ""),
    ("EFI/systemd/systemd-bootx64.efi", "Linux Boot Manager"),
)
EFI_DIR = Path("/sys/firmware/efi")


@dataclass(frozen=True)
class BootEntry:
    number: str  # "0003"
    label: str
    active: bool
    partuuid: str  # from HD(n,GPT,<guid>,...), lowercase; "" for other devices
    loader: str  # "\EFI\debian\shimx64.efi"; "" when none


@dataclass(frozen=True)
class BootState:
    current: str
    order: tuple[str, ...]
    entries: tuple[BootEntry, ...]

    def entry(self, number: str) -> BootEntry | None:
        return next((e for e in self.entries if e.number == number), None)


_ENTRY = re.compile(r"^Boot([0-9A-Fa-f]{4})(\*?)\s+(.*)$")
_HD = re.compile(r"HD\((\d+),GPT,([0-9a-fA-F-]{36})[^)]*\)", re.IGNORECASE)
_FILE = re.compile(r"(?<![A-Za-z])File\(([^)]*)\)")  # not FvFile(...)


def parse_efibootmgr(text: str) -> BootState:
    """Parse `efibootmgr -v` (versions 17 and 18: 18 prints the path without File(...))."""
    current, entries = "", []
    order: tuple[str, ...] = ()
    for line in text.splitlines():
        if line.startswith("BootCurrent:"):
            current = line.split(":", 1)[1].strip()
        elif line.startswith("BootOrder:"):
            order = tuple(x.strip() for x in line.split(":", 1)[1].split(",") if x.strip())
        else:
            m = _ENTRY.match(line)
            if not m:
                continue
            rest = m.group(3)
            # label and device path are separated by a tab in both versions
            label, _, path = rest.partition("\t")
            if not path:  # some builds use two spaces
                label, _, path = rest.partition("  ")
            hd = _HD.search(path)
            f = _FILE.search(path)
            tail = re.match(r"/(\\[^\s/]+)", path[hd.end() :]) if hd and not f else None
            loader = f.group(1) if f else (tail.group(1) if tail else "")
            entries.append(
                BootEntry(
                    number=m.group(1).upper(),
                    label=label.strip(),
                    active=m.group(2) == "*",
                    partuuid=hd.group(2).lower() if hd else "",
                    loader=loader,
                )
            )
    return BootState(current=current, order=order, entries=tuple(entries))


def booted_by_uefi() -> bool:
    return (EFI_DIR / "efivars").is_dir() or (EFI_DIR / "vars").is_dir()


def find_esp(partitions: tuple[Partition, ...]) -> Partition | None:
    esps = [
        p
        for p in partitions
        if p.part_type.lower() in (ESP_GPT, "0xef", "ef") and p.fstype == "vfat"
    ]
    return esps[0] if esps else None


def esp_files(esp: str) -> list[str]:
    """Every file on the ESP, as 'EFI/debian/grubx64.efi' (mtools, read-only)."""
    out = run_text(["mdir", "-i", esp, "-/", "-b", "::/"])
    files = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("::/") and not line.endswith("/"):
            files.append(line[3:])
    return files


def _match(files: list[str], pattern: str) -> list[str]:
    rx = re.compile("^" + re.escape(pattern).replace(r"\*", "[^/]+") + "$", re.IGNORECASE)
    return sorted(f for f in files if rx.match(f) and not f.upper().startswith("EFI/BOOT/"))


@dataclass(frozen=True)
class Loader:
    path: str  # as on the ESP: "EFI/debian/shimx64.efi"
    label: str

    @property
    def efi_path(self) -> str:
        return "\\" + self.path.replace("/", "\\")

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.efi_path, "label": self.label}


def find_loader(files: list[str]) -> Loader | None:
    for pattern, label in LOADERS:
        hits = _match(files, pattern)
        if hits:
            path = hits[0]
            return Loader(path, label or path.split("/")[1])
    return None


def has_fallback(files: list[str]) -> bool:
    return any(f.upper() == FALLBACK for f in files)


def add_fallback(esp: str, loader: Loader, files: list[str]) -> list[str]:
    """Copy the loader (and, for shim, the GRUB and MOK manager beside it) to EFI/BOOT.

    shim loads grubx64.efi from its own directory, so EFI/BOOT gets a copy of it too. Returns
    the files written, each then read back and compared.
    """
    src_dir = loader.path.rsplit("/", 1)[0]
    copies = [(loader.path, FALLBACK)]
    if loader.path.lower().endswith("shimx64.efi"):
        for extra in ("grubx64.efi", "mmx64.efi"):
            hit = _match(files, f"{src_dir}/{extra}")
            if hit:
                copies.append((hit[0], f"EFI/BOOT/{extra}"))
    if not any(f.upper().startswith("EFI/BOOT/") for f in files):
        run(["mmd", "-i", esp, "::/EFI/BOOT"])
    written = []
    for src, dst in copies:
        data = run(["mtype", "-i", esp, f"::/{src}"]).stdout
        run(["mcopy", "-i", esp, "-o", "-", f"::/{dst}"], input=data)
        back = run(["mtype", "-i", esp, f"::/{dst}"]).stdout
        if back != data:
            raise BootmediaError(f"{esp}: {dst} read back differs from {src}")
        written.append(dst)
    return written


def read_state() -> BootState:
    return parse_efibootmgr(run_text(["efibootmgr", "-v"]))


def matching(state: BootState, partuuid: str, loader: Loader) -> list[BootEntry]:
    return [
        e
        for e in state.entries
        if e.partuuid == partuuid.lower() and e.loader.lower() == loader.efi_path.lower()
    ]


def create_entry(disk: str, esp: Partition, loader: Loader) -> tuple[BootEntry, BootState]:
    """Make (or reuse) the entry, put it first in BootOrder, and read it back."""
    state = read_state()
    existing = matching(state, esp.part_uuid, loader)
    if existing:
        number = existing[0].number
        others = [n for n in state.order if n != number]
        run(["efibootmgr", "--bootorder", ",".join([number, *others])])
    else:
        run(
            [
                "efibootmgr",
                "--create",
                "--disk",
                disk,
                "--part",
                str(esp.number),
                "--label",
                loader.label,
                "--loader",
                loader.efi_path,
            ]
        )
    after = read_state()
    made = matching(after, esp.part_uuid, loader)
    if not made:
        raise BootmediaError(
            f"efibootmgr ran, but no boot entry for {loader.efi_path} on partition "
            f"{esp.part_uuid} is there when read back"
        )
    entry = made[0]
    if not after.order or after.order[0] != entry.number:
        raise BootmediaError(
            f"Boot{entry.number} was created but is not first in BootOrder "
            f"({','.join(after.order) or 'empty'}) when read back"
        )
    return entry, after
