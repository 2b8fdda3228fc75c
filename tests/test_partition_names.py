"""Partition nodes of a disk named by a /dev/disk/by-id link (what the CLI's --confirm and
the TUI's command lines use): the kernel names partitions after the real node."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootmedia.tools.partx import partition_path


@pytest.mark.parametrize(
    ("link", "node", "want"),
    [
        ("ata-Samsung_SSD_870_S5STNF0K", "/dev/sdb", "/dev/sdb3"),
        ("ata-WDC_WD10EZEX_WD-WCC6Y1234567", "/dev/sdb", "/dev/sdb3"),
        ("nvme-eui.0025388b71b0a1c2", "/dev/nvme0n1", "/dev/nvme0n1p3"),
    ],
)
def test_a_by_id_link_gives_the_real_partition_node(
    tmp_path: Path, link: str, node: str, want: str
) -> None:
    path = tmp_path / link
    path.symlink_to(node)
    assert partition_path(str(path), 3) == want


def test_plain_nodes_keep_the_kernel_rule() -> None:
    assert partition_path("/dev/sda", 1) == "/dev/sda1"
    assert partition_path("/dev/loop3", 2) == "/dev/loop3p2"
    assert partition_path("/dev/mmcblk0", 1) == "/dev/mmcblk0p1"
