"""https:// repositories from a real nginx with a certificate made by the test: trusted through
the CA named in the credentials file (`ca =`, as docs/NETWORK.md says), refused in one line
when the certificate does not chain to the CA given or names another host."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bootmedia import lab
from tests import sample
from tests.net.conftest import cli
from tests.net.netns import Netns
from tests.net.servers import Nginx, make_self_signed, make_tls, start_nginx

pytestmark = [pytest.mark.root, pytest.mark.real_tools]
MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[2]


def ca_entry(where: Path, server: Nginx, ca: Path) -> Path:
    where.write_text(f'[[share]]\nurl = "https://{server.host}:{server.port}"\nca = "{ca}"\n')
    return where


@pytest.fixture
def https(netns: Netns, tmp_path: Path, served: Path) -> tuple[Nginx, Path]:
    """nginx over TLS with a certificate for 127.0.0.1 signed by a CA made here."""
    tls = make_tls(tmp_path / "tls")
    return start_nginx(netns, tmp_path / "nginx-tls", served, port=8443, tls=tls), tls.ca


def test_images_verify_apply_over_https_with_the_ca_from_the_credentials_file(
    netns: Netns, https: tuple[Nginx, Path], golden, loopdev, tmp_path: Path
) -> None:
    server, ca = https
    _, layout, want = golden
    url = server.url("repo")
    assert url.startswith("https://127.0.0.1:8443/")
    creds = ("--credentials", str(ca_entry(tmp_path / "creds.toml", server, ca)))
    listed = cli(netns, tmp_path, *creds, "images", url, "--json")
    assert listed.returncode == 0, listed.stderr
    assert [m["name"] for m in json.loads(listed.stdout)["images"]] == ["golden"]
    ok = cli(netns, tmp_path, *creds, "verify", url, "golden")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    dst = loopdev(128 * MiB)
    restored = cli(
        netns, tmp_path, *creds, "apply", url, "golden", dst, "--confirm", Path(dst).name, "-q"
    )
    assert restored.returncode == 0, restored.stderr
    assert "verified" in restored.stdout
    lab.run(["partx", "-u", dst], check=False)
    assert sample.sums(dst, layout) == want
    # The chunks came over TLS as Range requests.
    lines = [ln.split() for ln in server.access_log.read_text().splitlines()]
    assert len([ln for ln in lines if "/packs/" in ln[3] and ln[4] == "206"]) > 20


def refused(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr


def test_an_untrusted_or_wrong_certificate_is_refused_in_one_line(
    netns: Netns, https: tuple[Nginx, Path], golden, tmp_path: Path
) -> None:
    server, _ = https
    url = server.url("repo")
    # No CA given: the system's CAs do not know the test's CA. Not retried: the same
    # certificate would be refused again.
    said = refused(cli(netns, tmp_path, "images", url))
    assert "certificate is refused (certificate verify failed: " in said, said
    assert "system's CAs" in said
    log = "\n".join(p.read_text() for p in (tmp_path / "log").glob("*.log"))
    assert "retry" not in log
    # Another CA than the one that signed the server's certificate.
    other = make_tls(tmp_path / "other", ca_name="another CA")
    said = refused(
        cli(netns, tmp_path, "--credentials", str(ca_entry(tmp_path / "o.toml", server, other.ca)),
            "images", url)
    )  # fmt: skip
    assert "unable to get local issuer certificate" in said and str(other.ca) in said, said
    # The right CA, but a certificate for another name than the one in the URL.
    elsewhere = make_tls(tmp_path / "elsewhere", name="images.example.lan")
    misnamed = start_nginx(
        netns, tmp_path / "nginx-misnamed", server.root, port=8444, tls=elsewhere
    )
    creds = ca_entry(tmp_path / "m.toml", misnamed, elsewhere.ca)
    said = refused(
        cli(netns, tmp_path, "--credentials", str(creds), "images", misnamed.url("repo"))
    )
    assert "certificate verify failed: IP address mismatch" in said, said
    # Plain http to the TLS port is no repository either (nginx answers 400).
    said = refused(cli(netns, tmp_path, "images", f"http://127.0.0.1:{server.port}/repo"))
    assert "HTTP 400" in said, said


def test_a_bad_ca_file_or_a_ca_for_plain_http_is_one_line(
    netns: Netns, https: tuple[Nginx, Path], golden, tmp_path: Path
) -> None:
    server, _ = https
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    creds = ca_entry(tmp_path / "j.toml", server, junk)
    said = refused(cli(netns, tmp_path, "--credentials", str(creds), "images", server.url("repo")))
    assert f"{junk}: not a readable CA certificate file" in said, said
    plain = tmp_path / "p.toml"
    plain.write_text(f'[[share]]\nurl = "http://127.0.0.1:8080"\nca = "{junk}"\n')
    said = refused(cli(netns, tmp_path, "--credentials", str(plain), "images", server.url("repo")))
    assert "ca is for https:// servers" in said, said
    missing = ca_entry(tmp_path / "n.toml", server, tmp_path / "nope.pem")
    said = refused(
        cli(netns, tmp_path, "--credentials", str(missing), "images", server.url("repo"))
    )
    assert "nope.pem is not a file" in said, said


def test_a_self_signed_certificate_is_trusted_when_given_as_the_ca(
    netns: Netns, golden, served: Path, tmp_path: Path
) -> None:
    own = make_self_signed(tmp_path / "self")
    server = start_nginx(netns, tmp_path / "nginx-self", served, port=8445, tls=own)
    creds = ca_entry(tmp_path / "s.toml", server, own.cert)
    listed = cli(netns, tmp_path, "--credentials", str(creds), "images", server.url("repo"))
    assert listed.returncode == 0, listed.stderr
    assert "golden" in listed.stdout
    said = refused(cli(netns, tmp_path, "images", server.url("repo")))
    assert "certificate verify failed: self-signed certificate" in said, said
