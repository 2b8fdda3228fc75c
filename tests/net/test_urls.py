"""Repository URLs and the credentials file: parsing, refusals, and secrets kept out of text."""

from __future__ import annotations

from pathlib import Path

import pytest

from bootmedia.errors import UsageError
from bootmedia.net import credentials
from bootmedia.net.url import RepoURL, is_url, parse_url


def test_each_scheme_parses() -> None:
    assert parse_url("smb://tech;OFFICE@fs1/images/golden?vers=3.0") == RepoURL(
        "smb", "fs1", None, "tech", "OFFICE", "images", "/golden", "3.0"
    )
    assert parse_url("nfs://10.0.0.2/srv/images") == RepoURL("nfs", "10.0.0.2", path="/srv/images")
    ssh = parse_url("ssh://root@[::1]:2222/srv/repo/")
    assert (ssh.host, ssh.port, ssh.user, ssh.path) == ("[::1]", 2222, "root", "/srv/repo")
    http = parse_url("https://mirror.lan/repos/main")
    assert http.http_base() == "https://mirror.lan/repos/main/"
    assert str(parse_url("smb://fs1/images")) == "smb://fs1/images"
    assert is_url("ssh://h/p") and not is_url("/run/bootmedia/data/images")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("smb://tech:secret@fs1/images", "password in the URL"),
        ("smb://fs1", "name the share"),
        ("nfs://fs1", "path on the server"),
        ("ssh://host", "path on the server"),
        ("ftp://fs1/x", "unsupported"),
        ("smb://fs1/images?vers=9", "vers=9"),
        ("nfs://fs1/x?vers=3.0", "vers=3.0"),
        ("smb://fs1/images?uid=0", "unknown option"),
        ("ssh://host/srv/../etc", "'..'"),
        ("http://user@host/x", "without a user"),
        ("nfs://user@host/x", "no user name"),
        ("smb://fs1:139/images", "port"),
        ("ssh://ho st/x", "server name"),
        ("ssh://host:99999/x", "valid URL"),
    ],
)
def test_bad_urls_get_one_line(text: str, says: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_url(text)
    assert says in str(err.value)
    assert "secret" not in str(err.value)


def test_credentials_file_matches_the_most_specific_entry(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "id").write_text("KEY")
    f = tmp_path / credentials.FILE_NAME
    f.write_text(
        '[[share]]\nurl = "smb://fs1"\nuser = "guest1"\npassword = "any"\n'
        '[[share]]\nurl = "smb://tech@fs1/images"\npassword = "s3cret"\ndomain = "OFFICE"\n'
        '[[share]]\nurl = "ssh://root@h:2222"\nkey = "keys/id"\n'
    )
    c = credentials.load(parse_url("smb://tech@fs1/images/x"), f)
    assert c is not None and (c.user, c.password, c.domain) == ("tech", "s3cret", "OFFICE")
    assert "s3cret" not in repr(c) and "s3cret" not in str(c)
    other = credentials.load(parse_url("smb://fs1/public"), f)
    assert other is not None and other.user == "guest1"
    k = credentials.load(parse_url("ssh://root@h:2222/srv/repo"), f)
    assert k is not None and k.key == tmp_path / "keys" / "id"
    assert credentials.load(parse_url("ssh://root@h/srv/repo"), f) is None  # other port


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("[[share]]\nuser = 'x'\n", "has no url"),
        ("[[share]]\nurl = 'smb://a/b'\npasswd = 'x'\n", "unknown key 'passwd'"),
        ("[[share]]\nurl = 'smb://a/b'\npassword = 3\n", "must be a string"),
        ("[[share]]\nurl = 'ssh://a/b'\nkey = 'nope'\n", "is not a file"),
        ("share = [", "unreadable"),
    ],
)
def test_bad_credentials_files_are_refused(tmp_path: Path, body: str, says: str) -> None:
    f = tmp_path / "c.toml"
    f.write_text(body)
    with pytest.raises(UsageError) as err:
        credentials.load(parse_url("ssh://a/b" if "ssh" in body else "smb://a/b"), f)
    assert says in str(err.value)


def test_many_commands_attaching_one_http_url_at_once(tmp_path: Path, monkeypatch) -> None:
    """Receivers on one machine (or a script) attach the same URL concurrently: each gets the
    placeholder, none fails (a shared temporary file name once made all but one crash)."""
    from concurrent.futures import ThreadPoolExecutor

    from bootmedia.net import mount

    monkeypatch.setattr(mount, "MOUNT_ROOT", tmp_path / "mnt")

    def one(_: int) -> str:
        with mount.attach("http://10.9.9.9:8080/repo") as local:
            return local

    with ThreadPoolExecutor(16) as pool:
        paths = set(pool.map(one, range(64)))
    (path,) = paths
    assert mount.label(path) == "http://10.9.9.9:8080/repo"
    assert not list((tmp_path / "mnt").rglob("*.tmp"))
