"""Real servers for the network tests, each started inside a test's namespace: OpenSSH's sshd,
nginx, Samba's smbd, nfs-ganesha. Configs, keys and logs all live in the test's directory."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.net.netns import Netns, sh, wait_port


@dataclass(frozen=True)
class Sshd:
    port: int
    user: str
    key: Path
    known_hosts: Path
    credentials: Path  # a bootmedia-credentials.toml naming the key and the host key
    log: Path

    def url(self, path: Path | str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"


@dataclass(frozen=True)
class PasswordSshd:
    port: int
    user: str
    password: str
    known_hosts: Path
    log: Path

    def url(self, path: Path | str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{path}"

    def credentials(self, where: Path, password: str | None = None) -> Path:
        """A bootmedia-credentials.toml with the password (or another one) and the host key."""
        where.write_text(
            f'[[share]]\nurl = "ssh://{self.user}@127.0.0.1:{self.port}"\n'
            f'password = "{self.password if password is None else password}"\n'
            f'known_hosts = "{self.known_hosts}"\n'
        )
        return where


def start_password_sshd(
    ns: Netns, work: Path, port: int = 2223, user: str = "tech", password: str = "Bm-t3st pw!"
) -> PasswordSshd:
    """sshd taking only passwords, for a test user that exists only in sshd's own mount
    namespace: copies of /etc/passwd and /etc/shadow with the user added are bind-mounted over
    the real ones there, so the host's user database is never touched. The user is uid 0 (the
    repository lives under the test's root-only tmp_path), under another name than root."""
    work.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)
    host_key = work / "host_ed25519"
    if not host_key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
    pub = Path(f"{host_key}.pub").read_text().split()
    known = work / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    hashed = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"], input=password + "\n", text=True,
        capture_output=True, check=True,
    ).stdout.strip()  # fmt: skip
    passwd, shadow = work / "passwd", work / "shadow"
    passwd.write_text(Path("/etc/passwd").read_text() + f"{user}:x:0:0:test:{work}:/bin/sh\n")
    shadow.write_text(Path("/etc/shadow").read_text() + f"{user}:{hashed}:19000:0:99999:7:::\n")
    shadow.chmod(0o600)
    cfg = work / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile none\nUsePAM no\n"
        f"StrictModes no\nAllowUsers {user}\nPermitRootLogin yes\nPubkeyAuthentication no\n"
        "PasswordAuthentication yes\nKbdInteractiveAuthentication no\nMaxAuthTries 2\n"
        "Subsystem sftp internal-sftp\nLogLevel VERBOSE\n"
    )
    log = work / "sshd.log"
    script = (
        'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/shadow && '
        'exec /usr/sbin/sshd -D -e -f "$3"'
    )
    ns.popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
         str(passwd), str(shadow), str(cfg)],
        log=log,
    )  # fmt: skip
    wait_port(ns, port)
    return PasswordSshd(port, user, password, known, log)


def start_sshd(ns: Netns, work: Path, port: int = 2222) -> Sshd:
    work.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    host_key, user_key = work / "host_ed25519", work / "id_ed25519"
    for key in (host_key, user_key):
        if not key.exists():
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    (work / "authorized_keys").write_text(Path(f"{user_key}.pub").read_text())
    pub = Path(f"{host_key}.pub").read_text().split()
    known = work / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    cfg = work / "sshd_config"
    cfg.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {work}/authorized_keys\nPidFile none\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n"
    )
    log = work / "sshd.log"
    ns.popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)], log=log)
    wait_port(ns, port)
    creds = work / "bootmedia-credentials.toml"
    creds.write_text(
        f'[[share]]\nurl = "ssh://root@127.0.0.1:{port}"\nkey = "{user_key.name}"\n'
        f'known_hosts = "{known.name}"\n'
    )
    return Sshd(port, "root", user_key, known, creds, log)


@dataclass(frozen=True)
class Nginx:
    port: int
    root: Path
    access_log: Path
    error_log: Path
    host: str = "127.0.0.1"
    scheme: str = "http"

    def url(self, rel: str = "") -> str:
        return f"{self.scheme}://{self.host}:{self.port}/{rel}"


@dataclass(frozen=True)
class Tls:
    ca: Path  # the CA certificate a client is given
    cert: Path  # the server's certificate, signed by that CA
    key: Path


def make_tls(work: Path, name: str = "127.0.0.1", ca_name: str = "bootmedia test CA") -> Tls:
    """A CA made here, and a server certificate it signs for `name` (an IP or DNS SAN)."""
    work.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        work / f for f in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    sh("openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "3",
       "-subj", f"/CN={ca_name}", "-addext", "basicConstraints=critical,CA:TRUE",
       "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    sh("openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
    san = "IP" if name.replace(".", "").isdigit() else "DNS"
    ext = work / "server.ext"
    ext.write_text(
        f"subjectAltName={san}:{name}\nextendedKeyUsage=serverAuth\n"
        "keyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n"
    )
    sh("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
       "-CAcreateserial", "-out", str(cert), "-days", "3", "-extfile", str(ext))  # fmt: skip
    return Tls(ca, cert, key)


def make_self_signed(work: Path, name: str = "127.0.0.1") -> Tls:
    """One self-signed certificate for `name` (no CA): the client is given the certificate."""
    work.mkdir(parents=True, exist_ok=True)
    key, cert = work / "self.key", work / "self.pem"
    sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
       "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "3", "-subj", f"/CN={name}",
       "-addext", f"subjectAltName=IP:{name}")  # fmt: skip
    return Tls(cert, cert, key)


def start_nginx(
    ns: Netns,
    work: Path,
    root: Path,
    port: int = 8080,
    host: str = "127.0.0.1",
    tls: Tls | None = None,
) -> Nginx:
    """nginx serving root read-only (GET and HEAD only), with JSON directory listings; over
    TLS with tls's certificate if given."""
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (work / sub).mkdir(exist_ok=True)
    access, error = work / "access.log", work / "error.log"
    conf = work / "nginx.conf"
    conf.write_text(
        f"""daemon off;
user root;
worker_processes 2;
pid {work}/nginx.pid;
error_log {error} info;
events {{ worker_connections 256; }}
http {{
    log_format bm '$connection $connection_requests $request_method $uri $status '
                  '"$http_range" $body_bytes_sent $remote_addr';
    access_log {access} bm;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    sendfile on;
    keepalive_requests 100000;
    server {{
        listen {host}:{port}{" ssl" if tls else ""};
        {f"ssl_certificate {tls.cert}; ssl_certificate_key {tls.key};" if tls else ""}
        root {root};
        location / {{
            autoindex on;
            autoindex_format json;
            limit_except GET {{ deny all; }}
        }}
    }}
}}
"""
    )
    ns.popen(["nginx", "-c", str(conf), "-p", str(work)], log=work / "nginx.out")
    wait_port(ns, port, host)
    return Nginx(port, root, access, error, host, "https" if tls else "http")


@dataclass(frozen=True)
class Smbd:
    port: int
    share: str
    user: str
    password: str
    path: Path
    config: Path
    credentials: Path
    log: Path

    def url(self, sub: str = "") -> str:
        return f"smb://{self.user}@127.0.0.1/{self.share}{'/' + sub if sub else ''}"

    def client(self, ns: Netns, command: str) -> subprocess.CompletedProcess[str]:
        auth = self.config.parent / "smbclient.auth"
        auth.write_text(f"username = {self.user}\npassword = {self.password}\n")
        auth.chmod(0o600)
        return ns.run(
            "smbclient", f"//127.0.0.1/{self.share}", "-p", str(self.port), "-A", str(auth),
            "-s", str(self.config), "-c", command, check=False,
        )  # fmt: skip


def start_smbd(ns: Netns, work: Path, share: Path, port: int = 445) -> Smbd:
    """smbd with one share and one user (root, with a password in a private passdb)."""
    work.mkdir(parents=True, exist_ok=True)
    for sub in ("lock", "state", "cache", "private", "pid", "ncalrpc"):
        (work / sub).mkdir(exist_ok=True)
    conf = work / "smb.conf"
    log = work / "smbd.log"
    conf.write_text(
        f"""[global]
   server role = standalone server
   smb ports = {port}
   interfaces = lo
   bind interfaces only = yes
   lock directory = {work}/lock
   state directory = {work}/state
   cache directory = {work}/cache
   private dir = {work}/private
   pid directory = {work}/pid
   ncalrpc dir = {work}/ncalrpc
   passdb backend = tdbsam:{work}/private/passdb.tdb
   log file = {log}
   log level = 1
   load printers = no
   printing = bsd
   printcap name = /dev/null
   disable spoolss = yes
   map to guest = never
   server min protocol = SMB2_02
[images]
   path = {share}
   read only = no
   valid users = root
   force user = root
"""
    )
    password = "bm-test-Pa55"
    subprocess.run(
        ["smbpasswd", "-c", str(conf), "-s", "-a", "root"],
        input=f"{password}\n{password}\n",
        text=True,
        capture_output=True,
        check=True,
    )
    ns.popen(
        ["smbd", "--foreground", "--no-process-group", f"--configfile={conf}", "--debug-stdout"],
        log=work / "smbd.out",
    )
    wait_port(ns, port)
    creds = work / "bootmedia-credentials.toml"
    creds.write_text(f'[[share]]\nurl = "smb://root@127.0.0.1/images"\npassword = "{password}"\n')
    return Smbd(port, "images", "root", password, share, conf, creds, log)


@dataclass(frozen=True)
class Ganesha:
    export: Path
    pseudo: str
    log: Path

    def url(self, sub: str = "") -> str:
        return f"nfs://127.0.0.1{self.pseudo}{'/' + sub if sub else ''}?vers=4.2"


def start_ganesha(ns: Netns, work: Path, export: Path, pseudo: str = "/export") -> Ganesha:
    """nfs-ganesha (userspace NFSv4 server, VFS backend) exporting `export` read-write as
    `pseudo`, on port 2049 of the namespace. NFSv4 only: no rpcbind, no lock manager."""
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "ganesha.conf"
    conf.write_text(
        "NFS_CORE_PARAM { Protocols = 4; NFS_Port = 2049; Enable_RQUOTA = false; "
        "Enable_NLM = false; }\n"
        "NFSV4 { Graceless = true; RecoveryBackend = fs; }\n"
        "EXPORT { Export_Id = 1; "
        f"Path = {export}; Pseudo = {pseudo}; Access_Type = RW; Squash = No_Root_Squash; "
        "SecType = sys; Protocols = 4; FSAL { Name = VFS; } }\n"
    )
    log = work / "ganesha.log"
    ns.popen(
        ["ganesha.nfsd", "-F", "-L", str(log), "-f", str(conf), "-p", str(work / "ganesha.pid"),
         "-N", "NIV_EVENT"],
        log=work / "ganesha.out",
    )  # fmt: skip
    wait_port(ns, 2049, seconds=40)
    return Ganesha(export, pseudo, log)
