"""A real ``redis-server`` for machines that have no Redis configured.

When ``FEATURESTORE_REDIS_URL`` is unset the tooling (CLI, online store plugin)
uses :class:`EmbeddedRedis`: a ``redis-server`` binary from PATH, bound to a free
loopback port, with its data directory under ``feature_repo/data/redis`` and AOF
persistence on, so a process that stops it and a later one that restarts it see
the same data. A server another process started (recorded in ``server.json`` in
the data directory and answering PING) is reused rather than started twice, and
only the process that started a server stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

from foundation.errors import BackendUnavailableError

_STATE_FILE = "server.json"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_redis_server() -> str:
    """Path to a ``redis-server`` binary.

    Raises:
        BackendUnavailableError: no binary on PATH (or in ``FEATURESTORE_REDIS_SERVER_BIN``).
    """
    binary = os.environ.get("FEATURESTORE_REDIS_SERVER_BIN") or shutil.which("redis-server")
    if not binary:
        raise BackendUnavailableError(
            "no redis-server binary found for the embedded Redis; install Redis "
            "(e.g. `apt-get install redis-server`) or set FEATURESTORE_REDIS_URL "
            "to an existing server"
        )
    return binary


def _ping(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


class EmbeddedRedis:
    """Start (or reuse) a persistent loopback ``redis-server`` rooted at ``data_dir``.

    Use as a context manager, or call :meth:`start` / :meth:`stop`.

    Args:
        data_dir: where AOF files and ``server.json`` live; created if missing.
        port: fixed port; by default a free one is picked.
        persistent: AOF on (the default) or no persistence at all (throwaway test servers).
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, persistent: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.persistent = persistent
        self.owned = False
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("embedded Redis is not started")
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id when this object started it (None when attached)."""
        return self._process.pid if self._process is not None else None

    def start(self) -> str:
        """Start the server, or attach to the one already running for ``data_dir``.

        Returns:
            The ``redis://`` URL of the server.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state = self.data_dir / _STATE_FILE
        if state.exists():
            try:
                url = str(json.loads(state.read_text())["url"])
            except (ValueError, KeyError):
                url = ""
            if url and _ping(url):
                self.port = int(url.rsplit(":", 1)[1].split("/")[0])
                return url
        self.port = self.port or free_port()
        args = [
            find_redis_server(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not _ping(self.url):
            if self._process.poll() is not None or time.monotonic() > deadline:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                self._process.kill()
                raise BackendUnavailableError(
                    f"embedded redis-server failed to start on port {self.port}: {err.strip()} "
                    f"(see {self.data_dir / 'redis.log'})"
                )
            time.sleep(0.02)
        self.owned = True
        state.write_text(json.dumps({"url": self.url, "pid": self._process.pid}))
        return self.url

    def stop(self) -> None:
        """Stop the server if this object started it; data is flushed to the AOF first."""
        if not self.owned or self._process is None:
            return
        try:
            client = redis.Redis.from_url(self.url, socket_timeout=5)
            client.shutdown(nosave=not self.persistent)
        except redis.RedisError:
            pass  # SHUTDOWN closes the connection; an error here is the expected goodbye
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        (self.data_dir / _STATE_FILE).unlink(missing_ok=True)
        self.owned = False
        self._process = None

    def kill(self) -> None:
        """SIGKILL the server (outage tests); it keeps what the AOF already holds."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
