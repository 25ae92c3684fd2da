"""A throwaway Postfix + dovecot-lda under one temp dir, for integration tests of `authsieve pipe`.

`throwaway_mta()` starts Postfix on 127.0.0.1 at a free port.  Its transport
map sends ``test.example`` to the ``authsieve`` pipe(8) service of
examples/postfix/master.cf, which runs ``authsieve pipe --deliver
dovecot-lda`` as ``nobody``; dovecot-lda (configured with the snippets of
examples/dovecot/2.3/ or 2.4/, as ``dovecot --version`` says, written in that
version's syntax by tests/dovecot_conf.py, its config file given with
``--lda-arg=-c``) runs each
recipient's Sieve script and writes into ``mail/<domain>/<local>/Maildir``
(the layout of the README's ``/var/vmail/*/*/Maildir``).  Both
have ``recipient_delimiter = +``.  No Dovecot server runs: a small wrapper
plays Dovecot's userdb, taking the mailbox user from ``-d`` (else ``-a``);
a user without a home is unknown (exit 67, as dovecot-lda's userdb lookup).
Everything is killed and removed when the ``with`` block ends, even when a
test failed (``AUTHSIEVE_KEEP_MTA=1`` keeps the files for a post-mortem).

pipe(8) never runs a command as root, and ``nobody`` may not be able to
read the repository or the interpreter running the tests.  So the code is
copied into the temp dir, and `pipe_interpreter` probes, as ``nobody``, the
repository's ``.venv``, the running interpreter and ``/usr/bin/python3``;
when none has the dependencies, it copies their installed files into the
temp dir and probes again.
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
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.dovecot_conf import DovecotSyntax

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
# conf.d files of examples/dovecot/VERSION/ that dovecot-lda reads, included as they are (the
# auth socket's and sieve_before's have no use without a Dovecot server).
DOVECOT_SNIPPETS = ("90-authsieve-lda.conf", "90-authsieve-mailboxes.conf")
POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
DOVECOT_LDA = "/usr/lib/dovecot/dovecot-lda"
SIEVEC = "/usr/bin/sievec"
PIPE_USER = "nobody"
DOMAIN = "test.example"
HOSTNAME = "mx.test.example"
# Distributions `authsieve pipe` imports, with what they pull in.
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
    " publicsuffixlist; assert importlib.util.find_spec('classifier.commands.main')"
)
FOLDERS = {"": "INBOX", ".Junk": "Junk", ".Quarantine": "Quarantine", ".News": "News"}


def example_snippets() -> dict[str, str]:
    """Gives the installed Dovecot's example files of DOVECOT_SNIPPETS by name, as copied."""
    folder = EXAMPLES / "dovecot" / DovecotSyntax().examples
    return {name: (folder / name).read_text() for name in DOVECOT_SNIPPETS}


def missing_parts() -> str:
    """Gives why the integration tests cannot run here ("" when everything is in place)."""
    if os.geteuid() != 0:
        return "starting a private Postfix needs root"
    for tool in (POSTFIX, POSTQUEUE, DOVECOT_LDA, SIEVEC, shutil.which("swaks") or "swaks"):
        if not os.access(tool, os.X_OK):
            return f"{tool} not installed (bash scripts/install-deps --test)"
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
    """Gives the finished process of argv run as user, without supplementary groups (as pipe(8))."""
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
    """A Python the pipe user can run, and the PYTHONPATH that gives it authsieve."""

    python: str
    path: tuple[str, ...]
    how: str


def probe(user: pwd.struct_passwd, python: str, path: tuple[str, ...]) -> str:
    """Gives why python cannot import authsieve and its dependencies as user ("" if it can)."""
    try:
        proc = run_as(user, [python, "-c", PROBE], {"PYTHONPATH": ":".join(path)})
    except OSError as exc:
        return exc.strerror or str(exc)
    said = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return "" if proc.returncode == 0 else (said[-1] if said else f"exit {proc.returncode}")


def copy_dependencies(source: str, dest: Path) -> bool:
    """Copies the installed files of DEPENDENCIES out of source's site-packages into dest."""
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
        argv = [source, "-c", lister, *DEPENDENCIES]
        proc = subprocess.run(argv, capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    for relative, located in json.loads(proc.stdout):
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            shutil.copyfile(located, target)
    # Bytecode now, as pip makes it at install: nobody could not write it, and Python 3.12+
    # would print pyspf's SyntaxWarning (an invalid escape in a docstring) on every run.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        compileall.compile_dir(dest, quiet=2)
    open_up(dest)
    return (dest / "spf.py").exists()


def pipe_interpreter(root: Path, user: pwd.struct_passwd) -> Interpreter | str:
    """Gives an interpreter user can run authsieve with, or why there is none."""
    app = root / "app"
    for package in ("classifier", "sieve"):
        shutil.copytree(REPO / package, app / package, ignore=shutil.ignore_patterns("*.pyc"))
    compileall.compile_dir(app, quiet=1)  # nobody could not write the .pyc files
    open_up(app)
    candidates = [os.environ.get("AUTHSIEVE_TEST_PYTHON", ""), str(REPO / ".venv/bin/python")]
    candidates += [sys.executable, "/usr/bin/python3"]
    candidates = [c for c in dict.fromkeys(candidates) if c and Path(c).exists()]
    tried = []
    for python in candidates:
        why = probe(user, python, (str(app),))
        if not why:
            return Interpreter(python, (str(app),), f"{python} with its own site-packages")
        tried.append(f"{python}: {why}")
    site = root / "site"
    for source in candidates:
        if not copy_dependencies(source, site):
            continue
        for python in dict.fromkeys(["/usr/bin/python3", os.path.realpath(source)]):
            why = probe(user, python, (str(app), str(site)))
            if not why:
                return Interpreter(python, (str(app), str(site)), f"{python}, files of {source}")
            tried.append(f"{python} with the files of {source}: {why}")
    return f"no Python {user.pw_name} can run has authsieve's dependencies: {'; '.join(tried)}"


def pipe_service(root: Path, user: str, master_cf: str | None = None) -> str:
    """Gives the authsieve service of master_cf (default: examples/postfix/master.cf), localised.

    The test runs the lines an admin copies; only the pipe user, the command's
    path, the config and the dovecot-lda stand-in are replaced, and the
    stand-in is given its config file as an admin would (``--lda-arg``).
    """
    text = (EXAMPLES / "postfix" / "master.cf").read_text() if master_cf is None else master_cf
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("authsieve "))
    block = [lines[first]]
    for line in lines[first + 1 :]:
        if not line[:1].isspace() or not line.strip():
            break
        block.append(line)
    service = re.sub(r"(?<![-\w])user=\S+", f"user={user}", "\n".join(block))
    command = "argv=/usr/local/bin/authsieve pipe"
    assert command in service, f"examples/postfix/master.cf: no {command!r}"
    ours = f"argv={root}/bin/authsieve pipe --config {root}/authsieve.toml"
    lda = f"--lda-path {root}/bin/dovecot-lda --lda-arg=-c --lda-arg={root}/dovecot/dovecot.conf"
    return service.replace(command, ours) + f"\n  {lda}\n"


@dataclass(frozen=True)
class Sent:
    """One message handed to Postfix."""

    token: str
    rcpt: str
    queue_id: str


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
    domain: str = DOMAIN
    master_cf: str | None = None  # the text holding the authsieve service; None: the example's
    # Postfix's transport for the domain: the authsieve pipe, or e.g. lmtp:unix:PATH (issue 18).
    transport: str = "authsieve:"
    snippets: dict[str, str] = field(default_factory=example_snippets)  # conf.d name → text
    sent: list[Sent] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.root / "authsieve.toml"

    def home(self, addr: str) -> Path:
        """Gives addr's home, as the stand-in userdb finds it: mail/<domain>/<local>."""
        local, _, domain = addr.lower().rpartition("@")
        return self.root / "mail" / domain / local

    def maildir(self, addr: str) -> Path:
        return self.home(addr) / "Maildir"

    def write_files(self) -> None:
        """Writes Postfix's, Dovecot's and the wrappers' files (authsieve's: `set_config`)."""
        r = self.root
        for sub in ("etc", "spool", "data", "mail", "bin", "dovecot/run", "dovecot/state", "out"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        main_cf = MAIN_CF.format(
            root=r, domain=self.domain, host=HOSTNAME, transport=self.transport
        )
        (r / "etc/main.cf").write_text(main_cf)
        service = pipe_service(r, self.user.pw_name, self.master_cf)
        (r / "etc/master.cf").write_text(MASTER_CF.format(port=self.port) + service)
        (r / "dovecot/dovecot.conf").write_text(dovecot_conf(r, self.snippets))
        for name, text in self.snippets.items():
            (r / "dovecot" / name).write_text(text)
        path = ":".join(self.interpreter.path)
        (r / "bin/authsieve").write_text(
            AUTHSIEVE.format(python=self.interpreter.python, path=path)
        )
        home_args = " ".join(DovecotSyntax().lda_home_args('"$HOME"'))
        (r / "bin/dovecot-lda").write_text(LDA.format(root=r, lda=DOVECOT_LDA, home=home_args))
        for log in ("authsieve.log", "dovecot/dovecot.log"):
            (r / log).touch()
        open_up(r)
        for wrapper in ("authsieve", "dovecot-lda"):
            (r / "bin" / wrapper).chmod(0o755)
        for writable in ("mail", "dovecot", "authsieve.log"):
            give(r / writable, self.user)
        os.chown(r / "data", pwd.getpwnam("postfix").pw_uid, -1)

    def set_config(self, text: str) -> None:
        """Writes authsieve's TOML config; the next delivery reads it."""
        self.config.write_text(text)
        self.config.chmod(0o644)

    def add_user(self, addr: str, sieve: str | None) -> None:
        """Creates addr's Maildir and installs its Sieve script (if any), compiled to check it."""
        home = self.home(addr)
        for sub in ("tmp", "new", "cur"):
            (home / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        for parent in (home.parent, home.parent.parent):
            parent.chmod(0o755)
        give(home, self.user)
        if sieve is None:
            return
        (home / ".dovecot.sieve").write_text(sieve)
        give(home, self.user)
        argv = [SIEVEC, "-c", str(self.root / "dovecot/dovecot.conf"), str(home / ".dovecot.sieve")]
        proc = run_as(self.user, argv, {"USER": addr.lower(), "HOME": str(home)})
        assert proc.returncode == 0, f"sievec rejected {addr}'s script: {proc.stderr.decode()}"

    def postfix(self, command: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Gives the finished `postfix -c ETC args...` (or `postqueue -c ETC args...`)."""
        argv = [POSTFIX if command == "postfix" else POSTQUEUE, "-c", str(self.root / "etc")]
        env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
        return subprocess.run([*argv, *args], capture_output=True, text=True, env=env, timeout=60)

    def start(self) -> None:
        """Starts Postfix and waits until its SMTP port answers."""
        proc = self.postfix("postfix", "start")
        assert proc.returncode == 0, f"postfix start failed:\n{proc.stderr}\n{self.logs()}"
        wait_until(self._listening, 15, "Postfix to listen", self.logs)

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """Kills every process of this Postfix: those whose working directory is its queue.

        Postfix's processes all run in the queue directory, so this also finds a master
        whose pid file was not written yet.  Not `postfix stop`, which polls once a second:
        the queue goes with the temp dir anyway.
        """
        spool = str((self.root / "spool").resolve())
        for _ in range(3):
            pids = [
                int(p.parent.name) for p in Path("/proc").glob("[0-9]*/cwd") if _cwd(p) == spool
            ]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if all(_wait_gone(pid, 10) for pid in pids):
                return
        raise AssertionError(f"Postfix processes in {spool} survived SIGKILL")

    def send(
        self,
        message: bytes,
        *,
        token: str,
        mail_from: str,
        rcpt: str,
        client_ip: str,
        helo: str,
        client_name: str = "[UNAVAILABLE]",
        login: str | None = None,
    ) -> str:
        """Sends message over SMTP as the client (ip, helo) played by XCLIENT; gives the queue id.

        client_name is the client's reverse DNS name; by default it has none.  login
        plays a client that authenticated (SMTP AUTH) as that user.
        """
        path = self.root / "out" / f"{token}.eml"
        path.write_bytes(message)
        argv = ["swaks", "--server", "127.0.0.1", "--port", str(self.port), "--timeout", "10"]
        argv += ["--helo", helo, "--xclient-helo", helo, "--xclient-addr", client_ip]
        argv += ["--xclient-name", client_name, "--from", mail_from, "--to", rcpt]
        argv += ["--xclient-login", login] if login else []
        argv += ["--data", f"@{path}"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        found = re.search(r"<-  250 .*queued as (\w+)", proc.stdout)
        assert proc.returncode == 0 and found, f"swaks failed:\n{proc.stdout}\n{proc.stderr}"
        self.sent.append(Sent(token, rcpt, found.group(1)))
        return found.group(1)

    def flush(self) -> None:
        """Asks Postfix to retry every deferred message now (`postqueue -f`)."""
        self.postfix("postqueue", "-f")

    def queue(self) -> list[dict[str, object]]:
        """Gives Postfix's queue, one dict per message (`postqueue -j`)."""
        out = self.postfix("postqueue", "-j").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def entry(self, queue_id: str) -> dict[str, object] | None:
        """Gives queue_id's entry in Postfix's queue, or None when it left the queue."""
        return next((q for q in self.queue() if q.get("queue_id") == queue_id), None)

    def deferred(self, queue_id: str) -> dict[str, object] | None:
        """Gives queue_id's entry when it sits in the deferred queue, else None."""
        entry = self.entry(queue_id)
        return entry if entry and entry.get("queue_name") == "deferred" else None

    def wait_deferred(self, queue_id: str, timeout: float = 20) -> dict[str, object]:
        """Gives the queue entry of queue_id once Postfix has deferred it and let go of it.

        The delivery agent closes the queue file just after reporting; a flush in
        between finds the file locked and parks the message for 60 s ("skipped, still
        being delivered").  So wait until no process has the deferred file open.
        """

        def settled() -> bool:
            files = list((self.root / "spool/deferred").rglob(queue_id))
            return bool(self.deferred(queue_id) and files and not _open_anywhere(files[0]))

        wait_until(settled, timeout, f"{queue_id} deferred", self.logs)
        return self.deferred(queue_id) or {}

    def mailboxes(self) -> list[Delivered]:
        """Gives every message in every user's INBOX, Junk and Quarantine."""
        found = []
        for home in sorted((self.root / "mail").glob("*/*")):
            user = f"{home.name}@{home.parent.name}"
            for suffix, folder in FOLDERS.items():
                for sub in ("new", "cur"):
                    d = home / "Maildir" / suffix / sub
                    files = sorted(d.iterdir()) if d.is_dir() else []
                    found += [Delivered(user, folder, p, p.read_bytes()) for p in files]
        return found

    def find(self, token: str) -> list[Delivered]:
        """Gives the delivered messages that carry token."""
        return [m for m in self.mailboxes() if token.encode() in m.data]

    def wait_delivered(self, token: str, timeout: float = 20, retrying: bool = False) -> Delivered:
        """Gives the one message carrying token once it arrived.

        Fails at once when the message leaves the queue undelivered (bounced), or when
        Postfix defers it, unless retrying (a deferral is expected).
        """
        queue_id = next(s.queue_id for s in self.sent if s.token == token)

        def arrived() -> bool:
            if self.find(token):
                return True
            entry = self.entry(queue_id)
            # Looked again: it may have been delivered since find() and so left the queue.
            gone = entry is None and not self.find(token)
            assert not gone, f"{token} ({queue_id}) left the queue undelivered\n{self.logs()}"
            late = not retrying and entry is not None and entry.get("queue_name") == "deferred"
            assert not late, f"{token} ({queue_id}) was deferred: {entry}\n{self.logs()}"
            return entry is None

        wait_until(arrived, timeout, f"delivery of {token}", self.logs)
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
    """Tells whether any process has path open (same inode, through /proc/*/fd)."""
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


def _cwd(link: Path) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return ""


def _wait_gone(pid: int, timeout: float) -> bool:
    """Tells whether pid ended within timeout (a zombie has: init reaps it when it likes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def throwaway_mta(
    domain: str = DOMAIN,
    master_cf: str | None = None,
    snippets: Callable[[Path], dict[str, str]] | None = None,
    transport: str = "authsieve:",
) -> Iterator[Mta | str]:
    """Gives a running Mta, or why none can run here; kills it and removes its files after.

    domain is the one Postfix hands to authsieve; master_cf holds the authsieve service
    (default: examples/postfix/master.cf); snippets gives the Dovecot conf.d files by name
    for the temp dir it is given (default: examples/dovecot/'s DOVECOT_SNIPPETS);
    transport is the domain's Postfix transport (``lmtp:unix:PATH``: a Dovecot LMTP
    that the caller runs, instead of the pipe).
    """
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
        mta = Mta(root, free_tcp_port(), interpreter, user, domain, master_cf, transport)
        if snippets is not None:
            mta.snippets = snippets(root)
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
# IPv6 too, for clients played with XCLIENT ADDR=IPV6:… (it listens on 127.0.0.1 only).
inet_protocols = all
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
relay_domains = {domain}
transport_maps = inline:{{ {domain}={transport} }}
recipient_delimiter = +
authsieve_destination_recipient_limit = 1
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_peername_lookup = no
disable_dns_lookups = yes
# A played loopback client (a content filter's re-injection) must not have its From/To
# headers rewritten: that would break DKIM (amavis's re-injection service sets the same).
local_header_rewrite_clients =
# A client played with XCLIENT LOGIN= shows its login, as with smtpd_sasl_auth_enable.
smtpd_sasl_authenticated_header = yes
biff = no
# Retry deferred mail within seconds, not minutes; not within one second, though: a
# message rescanned while the pipe agent still holds it is parked for 60 s.
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 10s
"""

# Only the services this Postfix uses; pipe_service() adds authsieve's.
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
proxymap  unix  - - n - - proxymap
error     unix  - - n - - error
retry     unix  - - n - - error
anvil     unix  - - n - 1 anvil
postlog   unix-dgram n - n - 1 postlogd
lmtp      unix  - - n - - lmtp
pickup    unix  n - n 60 1 pickup
"""


def dovecot_conf(root: Path, snippets: dict[str, str], syntax: DovecotSyntax | None = None) -> str:
    """Gives dovecot-lda's dovecot.conf (including the snippets) in the installed syntax."""
    syntax = syntax or DovecotSyntax()
    includes = "".join(f"!include {name}\n" for name in snippets)
    return (
        syntax.header()
        + "# dovecot-lda only: no Dovecot server runs.\n"
        + DOVECOT_CONF.format(root=root, host=HOSTNAME)
        + syntax.maildir("~/Maildir")
        + includes
        + syntax.sieve_scripts("~/sieve", "~/.dovecot.sieve")
    )


DOVECOT_CONF = """\
protocols =
ssl = no
base_dir = {root}/dovecot/run
state_dir = {root}/dovecot/state
log_path = {root}/dovecot/dovecot.log
stats_writer_socket_path =
hostname = {host}
recipient_delimiter = +
namespace inbox {{
  inbox = yes
}}
"""

# Stands in for the `authsieve` console script.
AUTHSIEVE = """\
#!/bin/sh
PYTHONPATH={path}
export PYTHONPATH
exec {python} -m classifier.commands.main "$@"
"""

# Plays Dovecot's userdb: the user is -d's (else the -a recipient), home mail/<domain>/<local>;
# a user without a home is unknown.  The config file comes from authsieve's --lda-arg.
LDA = """\
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
HOME={root}/mail/${{USER##*@}}/${{USER%@*}}
export USER HOME
if [ ! -d "$HOME" ]; then
  echo "lda($USER): Error: userdb lookup: user $USER doesn't exist" >&2
  exit 67
fi
exec {lda} {home} "$@"
"""
