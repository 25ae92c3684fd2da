"""A private PostgreSQL server for the report-store tests: initdb + pg_ctl under a temp dir.

Debian's `postgresql` package gives the binaries (/usr/lib/postgresql/N/bin).
The server refuses to run as root, so as root (CI) the cluster belongs to
`nobody`; it listens on no TCP address at all, only on a Unix socket in its
own directory, so nothing else on the machine can reach it.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

PG_ROOT = Path("/usr/lib/postgresql")


def pg_bin() -> Path | None:
    """Gives the newest installed PostgreSQL bin directory, or None without the package."""
    found = sorted(
        (p for p in PG_ROOT.glob("*/bin") if (p / "initdb").exists() and p.parent.name.isdigit()),
        key=lambda p: int(p.parent.name),
    )
    return found[-1] if found else None


class PostgresServer:
    """One throwaway cluster: `start()`, then `url(dbname)`; `stop()` removes it all."""

    def __init__(self) -> None:
        bindir = pg_bin()
        if bindir is None:
            raise FileNotFoundError("no PostgreSQL under /usr/lib/postgresql (Debian: postgresql)")
        self.bin = bindir
        self.root = Path(tempfile.mkdtemp(prefix="authsieve-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log = self.root / "server.log"
        self.port = random.randint(20000, 60000)  # names the socket file; no TCP listener
        self.user = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        self.role = "postgres"  # the superuser, as Debian names it
        self.running = False
        self.options = ""

    def _run(self, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", self.user.pw_name, "--", *cmd]
        return subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, check=True, timeout=120, cwd=self.root
        )

    def start(self) -> PostgresServer:
        self.root.chmod(0o755)
        self.socket_dir.mkdir(mode=0o755)
        self.log.touch()
        for path in (self.root, self.socket_dir, self.log):
            os.chown(path, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", self.role, "-A", "trust", "-E", "UTF8",
                  "--no-sync")  # fmt: skip
        options = (
            f"-c listen_addresses='' -c unix_socket_directories={self.socket_dir}"
            f" -c port={self.port} -c fsync=off -c full_page_writes=off"
        )
        self.options = options
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                  "-t", "60", "start")  # fmt: skip
        self.running = True
        return self

    def restart(self) -> None:
        """Stops the server (every connection cut, committed rows kept) and starts it again."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", self.options, "-w",
                  "-t", "60", "start")  # fmt: skip

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Runs an SQL script (psql's backslash commands too) as the superuser; gives its output."""
        return self._run(
            "psql", "-h", str(self.socket_dir), "-p", str(self.port), "-U", self.role,
            "-d", dbname, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-", stdin=sql,
        ).stdout  # fmt: skip

    def create_database(self, name: str) -> str:
        """Creates a database; gives its store URL."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def url(self, dbname: str, user: str | None = None) -> str:
        """Gives the socket URL form: postgresql://user@/dbname?host=DIR&port=N."""
        return f"postgresql://{user or self.role}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def stop(self) -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)
