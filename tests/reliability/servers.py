"""Servers that reliability tests may stop: a private PostgreSQL cluster.

The machine's shared PostgreSQL and Redis are never stopped; tests that need an
outage start their own (``redis_server_factory`` for Redis, :class:`ThrowawayPostgres`
here, built with ``initdb``/``pg_ctl`` in a temp dir and run as the ``postgres`` user
because PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from online_store.embedded import free_port


def _pg_bin() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not candidates:
        raise RuntimeError("no pg_ctl found; install the PostgreSQL server package")
    return Path(candidates[-1]).parent


class ThrowawayPostgres:
    """A PostgreSQL cluster of our own on a free loopback port."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: that tree is private to root, and the server runs
        # as `postgres`, which must be able to reach its data directory.
        base = Path(tempfile.mkdtemp(prefix="featurestore-pg-"))
        base.chmod(0o755)
        self.base = base
        self.root = base / "cluster"
        self.data = self.root / "pgdata"
        self.port = free_port()
        self.bin = _pg_bin()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            self.root.chmod(0o700)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        # -l: the server must not inherit our pipes, or waiting for pg_ctl never ends.
        log = str(self.root / "server.log")
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "-t", "60", "start"
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
