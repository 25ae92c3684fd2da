"""A throwaway Postfix + dovecot-lda under one temp dir, for integration tests of `authsieve pipe`.

`throwaway_mta()` starts Postfix on 127.0.0.1 at a free port whose transport
map sends the test domain to an ``authsieve`` pipe(8) service, which runs
``authsieve pipe --deliver dovecot-lda`` as an unprivileged user; dovecot-lda
runs each recipient's Sieve script and writes into Maildirs under the temp
dir.  No Dovecot server runs.  Everything stops when the ``with`` block ends,
even when a test failed.

pipe(8) refuses to run commands as root, so the pipe user (``nobody``) must
be able to run an interpreter that has authsieve's dependencies:
`pipe_interpreter` copies the code into the temp dir and probes, as that
user, the repository's ``.venv``, the running interpreter and
``/usr/bin/python3``; when none of them works it copies the dependencies'
files into the temp dir and tries again.

Dovecot's userdb is played by a small wrapper: dovecot-lda delivers as the
user named by ``-d`` (else the ``-a`` recipient), into
``mail/<address>/Maildir`` with ``mail/<address>/.dovecot.sieve``.
"""

from __future__ import annotations

import compileall
import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
# Included into the test's dovecot.conf, so that the examples are what runs.
DOVECOT_SNIPPETS = ("15-lda.conf", "15-mailboxes.conf")
POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
DOVECOT_LDA = "/usr/lib/dovecot/dovecot-lda"
SIEVEC = "/usr/bin/sievec"
PIPE_USER = "nobody"
DOMAIN = "test.example"
HOSTNAME = "mx.test.example"
# Distributions `authsieve pipe` imports at run time, with what they pull in.
DEPENDENCIES = (
    "pyspf",
    "dkimpy",
    "PyNaCl",
    "cffi",
    "pycparser",
    "authres",
    "dnspython",
    "publicsuffixlist",
)
PROBE = (
    "import importlib.util, tomllib, spf, dkim, nacl.signing, authres, dns.resolver,"
    " publicsuffixlist; assert importlib.util.find_spec('classifier.cli')"
)
FOLDERS = {"": "INBOX", ".Junk": "Junk", ".Quarantine": "Quarantine"}


def missing_parts() -> str:
    """Gives why the integration tests cannot run here ("" when everything is in place)."""
    if os.geteuid() != 0:
        return "starting a private Postfix needs root"
    for tool in (POSTFIX, POSTQUEUE, DOVECOT_LDA, SIEVEC):
        if not os.access(tool, os.X_OK):
            return f"{tool} not installed (bash scripts/install-deps --test)"
    if shutil.which("swaks") is None:
        return "swaks not installed (bash scripts/install-deps --test)"
    for name in ("postfix", PIPE_USER):
        try:
            pwd.getpwnam(name)
        except KeyError:
            return f"no {name} user"
    return ""


def free_tcp_port() -> int:
    """Gives a loopback TCP port where nothing listens right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def open_up(path: Path) -> None:
    """Makes a tree readable (and its directories traversable) by every user."""
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)


def give(path: Path, owner: pwd.struct_passwd) -> None:
    """Hands a tree to owner, so that the pipe user may write into it."""
    for p in [path, *path.rglob("*")]:
        os.chown(p, owner.pw_uid, owner.pw_gid)


def run_as(
    user: pwd.struct_passwd, argv: list[str], env: dict[str, str], data: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """Gives the finished process of argv run as user (no supplementary groups, like pipe(8))."""
    return subprocess.run(
        argv,
        input=data,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", **env},
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        cwd="/",
        timeout=60,
        check=False,
    )


@dataclass(frozen=True)
class Interpreter:
    """A Python the pipe user can run, with the PYTHONPATH that gives it authsieve."""

    python: str
    path: tuple[str, ...]
    how: str


def probe(user: pwd.struct_passwd, python: str, path: tuple[str, ...]) -> str:
    """Gives why python cannot run authsieve as user ("" when it can)."""
    try:
        proc = run_as(user, [python, "-c", PROBE], {"PYTHONPATH": ":".join(path)})
    except OSError as exc:
        return exc.strerror or str(exc)
    said = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return "" if proc.returncode == 0 else (said[-1] if said else f"exit {proc.returncode}")


def copy_dependencies(source: str, dest: Path) -> bool:
    """Copies the installed files of DEPENDENCIES from source's site-packages into dest."""
    lister = (
        "import json, sys\nfrom importlib import metadata\nout = []\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n        dist = metadata.distribution(name)\n"
        "    except metadata.PackageNotFoundError:\n        continue\n"
        "    out += [(str(f), str(dist.locate_file(f))) for f in dist.files or ()"
        " if f.parts[0] != '..' and f.suffix != '.pyc']\n"
        "print(json.dumps(out))\n"
    )
    try:
        proc = subprocess.run(
            [source, "-c", lister, *DEPENDENCIES], capture_output=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return False
    for relative, located in json.loads(proc.stdout):
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copyfile(located, target)
    open_up(dest)
    return (dest / "spf.py").exists()


def stage_code(dest: Path) -> Path:
    """Gives dest holding a compiled copy of classifier/ and sieve/ that anyone can read."""
    for package in ("classifier", "sieve"):
        shutil.copytree(
            REPO / package, dest / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    compileall.compile_dir(dest, quiet=1)
    open_up(dest)
    return dest


def pipe_interpreter(root: Path, user: pwd.struct_passwd) -> Interpreter | str:
    """Gives an interpreter user can run authsieve with, or why there is none."""
    app = str(stage_code(root / "app"))
    candidates = [str(REPO / ".venv" / "bin" / "python"), sys.executable, "/usr/bin/python3"]
    if os.environ.get("AUTHSIEVE_TEST_PYTHON"):
        candidates.insert(0, os.environ["AUTHSIEVE_TEST_PYTHON"])
    candidates = [
        c for i, c in enumerate(candidates) if c not in candidates[:i] and Path(c).exists()
    ]
    tried = []
    for python in candidates:
        why = probe(user, python, (app,))
        if not why:
            return Interpreter(python, (app,), f"{python} with its own site-packages")
        tried.append(f"{python}: {why}")
    site = root / "site"
    for source in candidates:
        if not copy_dependencies(source, site):
            continue
        for python in dict.fromkeys(["/usr/bin/python3", os.path.realpath(source)]):
            why = probe(user, python, (app, str(site)))
            if not why:
                return Interpreter(python, (app, str(site)), f"{python}, packages from {source}")
            tried.append(f"{python} with packages of {source}: {why}")
    return (
        f"no Python that {user.pw_name} can run has authsieve's dependencies ({'; '.join(tried)})"
    )


def pipe_service(root: Path, user: str) -> str:
    """Gives the authsieve service of examples/postfix/master.cf, with this instance's paths.

    The test runs the very lines the admin copies; only the pipe user, the
    command's path, the config and the dovecot-lda stand-in are replaced.
    """
    lines = (EXAMPLES / "postfix" / "master.cf").read_text().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("authsieve "))
    block = [lines[first]]
    for line in lines[first + 1 :]:
        if not line[:1].isspace() or not line.strip():
            break
        block.append(line)
    service = re.sub(r"\buser=\S+", f"user={user}", "\n".join(block))
    command = "argv=/usr/local/bin/authsieve pipe"
    assert command in service, f"examples/postfix/master.cf: no {command!r}"
    service = service.replace(
        command, f"argv={root}/bin/authsieve pipe --config {root}/authsieve.toml"
    )
    return f"{service}\n  --lda-path {root}/bin/dovecot-lda\n"


@dataclass(frozen=True)
class Delivered:
    """One message found in a Maildir."""

    user: str
    folder: str
    path: Path
    data: bytes


@dataclass
class Mta:
    """A private Postfix whose test domain goes through authsieve pipe to dovecot-lda."""

    root: Path
    port: int
    interpreter: Interpreter
    user: pwd.struct_passwd
    sent: list[tuple[str, str]] = field(default_factory=list)  # (token, recipient)

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def config(self) -> Path:
        return self.root / "authsieve.toml"

    def home(self, addr: str) -> Path:
        return self.root / "mail" / addr.lower()

    def maildir(self, addr: str) -> Path:
        return self.home(addr) / "Maildir"

    def write_files(self) -> None:
        """Writes Postfix's, Dovecot's and authsieve's files (authsieve's config: `set_config`)."""
        r = self.root
        for sub in ("etc", "spool", "data", "mail", "bin", "dovecot/run", "dovecot/state", "out"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        (r / "etc" / "main.cf").write_text(MAIN_CF.format(root=r, domain=DOMAIN, host=HOSTNAME))
        (r / "etc" / "master.cf").write_text(
            MASTER_CF.format(port=self.port) + pipe_service(r, self.user.pw_name)
        )
        (r / "dovecot" / "dovecot.conf").write_text(DOVECOT_CONF.format(root=r, host=HOSTNAME))
        for snippet in DOVECOT_SNIPPETS:
            shutil.copyfile(EXAMPLES / "dovecot" / snippet, r / "dovecot" / snippet)
        python, path = self.interpreter.python, ":".join(self.interpreter.path)
        wrappers = {
            "authsieve": AUTHSIEVE_WRAPPER.format(python=python, path=path),
            "dovecot-lda": LDA_WRAPPER.format(root=r, lda=DOVECOT_LDA),
        }
        for name, text in wrappers.items():
            (r / "bin" / name).write_text(text)
        for log in ("authsieve.log", "dovecot/dovecot.log"):
            (r / log).touch()
        open_up(r)
        for name in wrappers:
            (r / "bin" / name).chmod(0o755)
        for writable in ("mail", "dovecot", "authsieve.log"):
            give(r / writable, self.user)
        pf = pwd.getpwnam("postfix")
        os.chown(r / "data", pf.pw_uid, pf.pw_gid)

    def set_config(self, text: str) -> None:
        """Writes authsieve's TOML config; the next delivery reads it."""
        self.config.write_text(text)
        self.config.chmod(0o644)

    def add_user(self, addr: str, sieve: str) -> None:
        """Creates addr's Maildir and installs (and compiles, to catch errors) its Sieve script."""
        home = self.home(addr)
        for sub in ("tmp", "new", "cur"):
            (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        (home / ".dovecot.sieve").write_text(sieve)
        give(home, self.user)
        proc = run_as(
            self.user,
            [
                SIEVEC,
                "-c",
                str(self.root / "dovecot" / "dovecot.conf"),
                str(home / ".dovecot.sieve"),
            ],
            {"USER": addr.lower(), "HOME": str(home)},
        )
        assert proc.returncode == 0, f"sievec rejected {addr}'s script: {proc.stderr.decode()}"

    def postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Gives the finished `postfix -c ETC args...` (or postqueue with args[0] == "queue")."""
        argv = (
            [POSTQUEUE, "-c", str(self.etc), *args[1:]]
            if args[0] == "queue"
            else [POSTFIX, "-c", str(self.etc), *args]
        )
        env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)

    def start(self) -> None:
        """Starts Postfix and waits until its SMTP port answers."""
        proc = self.postfix("start")
        assert proc.returncode == 0, f"postfix start failed:\n{proc.stderr}\n{self.logs()}"
        wait_until(self._listening, 15, "Postfix to listen", self.logs)

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """Stops Postfix: kills its master's process group (master, smtpd, qmgr, pipe...).

        Not `postfix stop`: it polls once a second and so costs one or two seconds.
        """
        pid_file = self.root / "spool" / "pid" / "master.pid"
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else 0
        comm = Path(f"/proc/{pid}/comm")
        if not pid or not comm.exists() or comm.read_text().strip() != "master":
            return
        # The queue is thrown away with the temp dir: nothing to shut down gracefully for
        # (on SIGTERM the master waits a second for its children).
        os.killpg(pid, signal.SIGKILL)
        assert _wait_gone(pid, 10), f"Postfix master {pid} survived SIGKILL"

    def send(
        self,
        message: bytes,
        *,
        mail_from: str,
        rcpt: str,
        client_ip: str,
        helo: str,
        client_name: str = "[UNAVAILABLE]",
        token: str = "",
    ) -> str:
        """Sends message over SMTP as client (ip, helo) by XCLIENT; gives Postfix's queue id."""
        path = self.root / "out" / f"{len(self.sent)}.eml"
        path.write_bytes(message)
        argv = ["swaks", "--server", "127.0.0.1", "--port", str(self.port), "--helo", helo]
        argv += ["--xclient-addr", client_ip, "--xclient-name", client_name]
        argv += ["--xclient-helo", helo, "--from", mail_from, "--to", rcpt, "--data", f"@{path}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        found = re.search(r"<-  250 .*queued as (\w+)", proc.stdout)
        assert proc.returncode == 0 and found, f"swaks failed:\n{proc.stdout}\n{proc.stderr}"
        self.sent.append((token, rcpt))
        return found.group(1)

    def flush(self) -> None:
        """Asks Postfix to retry every deferred message now."""
        self.postfix("queue", "-f")

    def queue(self) -> list[dict[str, object]]:
        """Gives Postfix's queue, one dict per message (postqueue -j)."""
        out = self.postfix("queue", "-j").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_deferred(self, queue_id: str, timeout: float = 20) -> dict[str, object]:
        """Gives the queue entry of queue_id once Postfix has deferred it and let go of it.

        The delivery agent closes the queue file just after reporting; a flush in
        between finds the file locked and parks the message for 60 s ("skipped, still
        being delivered").  So wait until no process has the deferred file open.
        """

        def entry() -> dict[str, object] | None:
            found = [q for q in self.queue() if q.get("queue_id") == queue_id]
            if not found or found[0].get("queue_name") != "deferred":
                return None
            files = list((self.root / "spool" / "deferred").rglob(queue_id))
            return found[0] if files and not _open_anywhere(files[0]) else None

        wait_until(lambda: entry() is not None, timeout, f"{queue_id} deferred", self.logs)
        return entry() or {}

    def mailboxes(self) -> list[Delivered]:
        """Gives every message in every user's INBOX, Junk and Quarantine."""
        found = []
        for home in sorted((self.root / "mail").iterdir()):
            for suffix, folder in FOLDERS.items():
                for sub in ("new", "cur"):
                    d = home / "Maildir" / suffix / sub if suffix else home / "Maildir" / sub
                    if d.is_dir():
                        found += [
                            Delivered(home.name, folder, p, p.read_bytes()) for p in d.iterdir()
                        ]
        return found

    def find(self, token: str) -> list[Delivered]:
        """Gives the delivered messages that carry token."""
        return [m for m in self.mailboxes() if token.encode() in m.data]

    def wait_delivered(self, token: str, timeout: float = 20) -> Delivered:
        """Gives the one message carrying token, waiting (bounded) for it to arrive."""
        wait_until(lambda: bool(self.find(token)), timeout, f"delivery of {token}", self.logs)
        found = self.find(token)
        assert len(found) == 1, f"{token} delivered {len(found)} times"
        return found[0]

    def wait_queue_empty(self, timeout: float = 20) -> None:
        """Returns once Postfix's queue is empty."""
        wait_until(lambda: not self.queue(), timeout, "an empty queue", self.logs)

    def logs(self) -> str:
        """Gives the tail of Postfix's, authsieve's and Dovecot's logs, for failure messages."""
        parts = []
        for name in ("postfix.log", "authsieve.log", "dovecot/dovecot.log"):
            path = self.root / name
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"--- {name}\n" + "\n".join(text.splitlines()[-25:]))
        return "\n".join(parts)


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, details: Callable[[], str]
) -> None:
    """Polls condition every 50 ms until it holds; fails naming what after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{details()}")
        time.sleep(0.05)


def _open_anywhere(path: Path) -> bool:
    """Tells whether any process has path open (by inode, through /proc/*/fd)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        with contextlib.suppress(OSError):
            other = fd.stat()
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return True
    return False


def _wait_gone(pid: int, timeout: float) -> bool:
    """Tells whether pid ended within timeout (a zombie has ended: init reaps it when it likes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def throwaway_mta() -> Iterator[Mta | str]:
    """Gives a running Mta (or why none can run here); stops it and removes its files after."""
    reason = missing_parts()
    if reason:
        yield reason
        return
    root = Path(tempfile.mkdtemp(prefix="authsieve-mta-"))
    root.chmod(0o755)
    mta = None
    try:
        user = pwd.getpwnam(PIPE_USER)
        interpreter = pipe_interpreter(root, user)
        if isinstance(interpreter, str):
            yield interpreter
            return
        mta = Mta(root, free_tcp_port(), interpreter, user)
        mta.write_files()
        mta.start()
        yield mta
    finally:
        if mta is not None:
            mta.stop()
        if not os.environ.get("AUTHSIEVE_KEEP_MTA"):
            shutil.rmtree(root, ignore_errors=True)


MAIN_CF = """\
# A private Postfix for authsieve's integration tests: loopback only, no DNS.
compatibility_level = 3.6
queue_directory = {root}/spool
data_directory = {root}/data
maillog_file = {root}/postfix.log
maillog_file_prefixes = {root}
myhostname = {host}
mydomain = {domain}
myorigin = {host}
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
relay_domains = {domain}
transport_maps = inline:{{ {domain}=authsieve: }}
authsieve_destination_recipient_limit = 1
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_peername_lookup = no
disable_dns_lookups = yes
biff = no
# Retry deferred mail within seconds, not minutes.
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
"""

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
flush     unix  n - n 1000? 0 flush
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
anvil     unix  - - n - 1 anvil
postlog   unix-dgram n - n - 1 postlogd
"""

DOVECOT_CONF = """\
# dovecot-lda only: no Dovecot server runs.
protocols =
ssl = no
base_dir = {root}/dovecot/run
state_dir = {root}/dovecot/state
log_path = {root}/dovecot/dovecot.log
stats_writer_socket_path =
mail_location = maildir:~/Maildir
hostname = {host}
!include 15-lda.conf
!include 15-mailboxes.conf
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
}}
"""

# Stands in for the `authsieve` console script.
AUTHSIEVE_WRAPPER = """\
#!/bin/sh
PYTHONPATH={path}
export PYTHONPATH
exec {python} -m classifier.cli "$@"
"""

# Plays Dovecot's userdb: the user is -d's (else the -a recipient), home mail/<user>.
LDA_WRAPPER = """\
#!/bin/sh
user=
take=
for arg do
  shift
  case $take in
    d) user=$arg; take=; continue ;;
    a) [ -n "$user" ] || user=$arg; take= ;;
  esac
  case $arg in
    -d) take=d; continue ;;
    -a) take=a ;;
  esac
  set -- "$@" "$arg"
done
USER=${{user:-nobody}}
HOME={root}/mail/$USER
export USER HOME
exec {lda} -c {root}/dovecot/dovecot.conf "$@"
"""
