"""The real servers start inside a namespace and answer there (and only there)."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from tests.net.netns import Netns
from tests.net.servers import Nginx, Smbd, Sshd

pytestmark = [pytest.mark.root, pytest.mark.real_tools]


def test_sshd_accepts_the_generated_user_key_and_pins_its_host_key(
    netns: Netns, sshd: Sshd
) -> None:
    proc = netns.run(
        "ssh", "-i", str(sshd.key), "-p", str(sshd.port), "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "root@127.0.0.1", "echo", "hello-from-sshd",
    )  # fmt: skip
    assert proc.stdout.strip() == "hello-from-sshd"
    # The namespace's server is not reachable from the host's own network.
    s = socket.socket()
    s.settimeout(1)
    assert s.connect_ex(("127.0.0.1", sshd.port)) != 0 or _not_sshd(s)
    s.close()


def _not_sshd(s: socket.socket) -> bool:
    try:
        return not s.recv(16).startswith(b"SSH-")
    except OSError:
        return True


def test_nginx_serves_files_read_only(netns: Netns, nginx: Nginx, served: Path) -> None:
    (served / "hello.txt").write_bytes(b"0123456789")
    with netns.entered():
        req = urllib.request.Request(nginx.url("hello.txt"), headers={"Range": "bytes=2-4"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 206
            assert resp.read() == b"234"
        put = urllib.request.Request(nginx.url("new.txt"), data=b"x", method="PUT")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(put, timeout=5)
        assert err.value.code in (403, 405)
    assert not (served / "new.txt").exists()


def test_smbd_share_takes_the_user_and_refuses_a_wrong_password(
    netns: Netns, smbd: Smbd, tmp_path: Path
) -> None:
    src = tmp_path / "up.bin"
    src.write_bytes(b"smb-bytes")
    proc = smbd.client(netns, f"put {src} up.bin; ls")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (smbd.path / "up.bin").read_bytes() == b"smb-bytes"
    bad = netns.run(
        "smbclient", "//127.0.0.1/images", "-p", str(smbd.port), "-U", "root%wrong",
        "-s", str(smbd.config), "-c", "ls", check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "NT_STATUS_LOGON_FAILURE" in bad.stdout + bad.stderr


def test_nfs_ganesha_serves_nfsv4_in_the_namespace(netns: Netns, tmp_path: Path) -> None:
    from tests.net.servers import start_ganesha

    export = tmp_path / "export"
    export.mkdir()
    g = start_ganesha(netns, tmp_path / "ganesha", export)
    assert "NFS SERVER INITIALIZED" in g.log.read_text()


def test_share_mounts_fail_in_one_line_where_the_kernel_has_no_client(
    netns: Netns, smbd: Smbd, tmp_path: Path
) -> None:
    """This host's kernel has no cifs or nfs module (the live system's has: tests/e2e/test_net.py
    mounts both); the error is one line naming the share, never a traceback or a success."""
    import os
    import subprocess
    import sys

    from tests.net.servers import start_ganesha

    export = tmp_path / "export"
    (export / "repo").mkdir(parents=True)
    g = start_ganesha(netns, tmp_path / "ganesha", export)
    env = dict(
        os.environ, BOOTMEDIA_NET_DIR=str(tmp_path / "mnt"), BOOTMEDIA_LOG_DIR=str(tmp_path / "log")
    )
    root = Path(__file__).resolve().parents[2]
    for url, says in (
        (smbd.url(), "cannot mount the share"),
        (g.url("repo"), "cannot mount the export"),
    ):
        proc = subprocess.run(
            netns.cmd(sys.executable, "-m", "bootmedia", "--credentials", str(smbd.credentials), "images", url),
            capture_output=True, text=True, env=env, cwd=root, check=False, timeout=300,
        )  # fmt: skip
        if proc.returncode == 0:  # a kernel with the client after all: then it must list
            assert "images;" in proc.stdout
            continue
        assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert smbd.password not in proc.stderr
    log = "\n".join(p.read_text() for p in (tmp_path / "log").glob("*.log"))
    assert smbd.password not in log, "the SMB password reached the log"
