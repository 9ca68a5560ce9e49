"""What the benchmarks share: a database, a service process, and wrk driving load at it.

`BENCH_DATABASE_URL` points the benchmarks at a server of your own (a role that may create
databases); `BENCH_POSTGRES=15` starts a stock PostgreSQL 15 from Debian's `postgresql-15` package with its
default settings (what a new user's own server looks like); otherwise they start the embedded one, in a
temporary directory either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx2

from service import database
from service.embedded import EmbeddedPostgres

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def database_server() -> Iterator[str]:
    url = os.environ.get("BENCH_DATABASE_URL")
    if url:
        yield url
        return
    version = os.environ.get("BENCH_POSTGRES")
    if version:
        with stock_postgres(version) as dsn:
            yield dsn
        return
    with tempfile.TemporaryDirectory(prefix="dlr-bench-") as tmp, EmbeddedPostgres(Path(tmp)) as dsn:
        yield dsn


@contextlib.contextmanager
def stock_postgres(version: str) -> Iterator[str]:
    """Debian's PostgreSQL `version` with initdb's defaults, on a free loopback port, as .ci/run starts it."""
    binaries = Path(f"/usr/lib/postgresql/{version}/bin")
    if not (binaries / "postgres").exists():
        raise SystemExit(f"{binaries}/postgres is missing: apt-get install postgresql-{version}")
    port = free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # it refuses to run as root
    with tempfile.TemporaryDirectory(prefix="dlr-bench-pg-") as tmp:
        if as_postgres:
            shutil.chown(tmp, "postgres")
        data = Path(tmp) / "data"
        subprocess.run([*as_postgres, binaries / "initdb", "-D", data, "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True)  # fmt: skip
        options = f"-h 127.0.0.1 -p {port} -k {tmp}"
        subprocess.run([*as_postgres, binaries / "pg_ctl", "-D", data, "-l", Path(tmp) / "log", "-w", "-o", options,
                        "start"], check=True, capture_output=True)  # fmt: skip
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*as_postgres, binaries / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop"],
                           check=False, capture_output=True)  # fmt: skip


class ServerCost:
    """PostgreSQL's own cost of a stretch of work: WAL bytes (from the WAL position), commits (pg_stat_database) and
    the CPU time of the server's processes (those still running at the end: the service's pooled sessions
    among them)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._start = self._sample()

    async def _counters(self) -> tuple[int, int, str]:
        conn = await asyncpg.connect(self.dsn)
        try:
            # The WAL position, not pg_stat_wal: sessions report their WAL statistics lazily (at most once a
            # second, or when they end), so pg_stat_wal read right after a run leaves the last second out.
            wal = int(await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')"))
            commits = int(await conn.fetchval("SELECT sum(xact_commit) FROM pg_stat_database"))
            return wal, commits, str(await conn.fetchval("SHOW data_directory"))
        finally:
            await conn.close()

    def _sample(self) -> tuple[int, int, float]:
        import psutil

        wal, commits, data_dir = asyncio.run(self._counters())
        pid = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
        server = psutil.Process(pid)
        cpu = 0.0
        for process in [server, *server.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                cpu += times.user + times.system
        return wal, commits, cpu

    def per(self, reports: int) -> tuple[float, float, float]:
        """(WAL bytes, commits, server CPU microseconds) per report since this was made."""
        wal, commits, cpu = self._sample()
        n = max(1, reports)
        return (wal - self._start[0]) / n, (commits - self._start[1]) / n, 1e6 * (cpu - self._start[2]) / n


def fresh_database(server: str, migrated: bool = True) -> str:
    """A new database on the server, migrated unless told not to (left in place: inspect it afterwards)."""
    name = f"dlr_bench_{uuid.uuid4().hex[:10]}"

    async def create() -> None:
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    dsn = urlunsplit(urlsplit(server)._replace(path=f"/{name}"))
    if migrated:
        database.migrate(dsn)
    return dsn


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """`dlr-tracker serve` (or any ASGI app string) under uvicorn, in its own process."""

    def __init__(self, env: dict[str, str], argv: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), "LOG_LEVEL": "warning", **env}
        script = shutil.which("dlr-tracker", path=str(Path(sys.executable).parent))
        argv = argv or ([script, "serve"] if script else [sys.executable, "-m", "service.cli", "serve"])
        argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.log = tempfile.NamedTemporaryFile(prefix="dlr-bench-service-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(argv, env=full_env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait(env.get("READY_PATH", "/readyz"))

    def _wait(self, path: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"service exited: see {self.log.name}")
            with contextlib.suppress(httpx2.TransportError):
                if httpx2.get(self.url + path, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise SystemExit(f"service not ready: see {self.log.name}")

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the service and its children (uvicorn workers), from /proc."""
        import psutil

        total = 0
        try:
            proc = psutil.Process(self.proc.pid)
            for p in [proc, *proc.children(recursive=True)]:
                status = Path(f"/proc/{p.pid}/status").read_text()
                match = re.search(r"VmHWM:\s+(\d+) kB", status)
                total += int(match.group(1)) if match else 0
        except (psutil.NoSuchProcess, FileNotFoundError):
            return 0.0
        return total / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (Debian package) ...", file=sys.stderr)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "wrk"],
            check=False,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            stdout=subprocess.DEVNULL,
        )
        path = shutil.which("wrk")
    if not path:
        raise SystemExit("the benchmarks need wrk: `apt-get install wrk`")
    return path


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: int


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def parse_wrk(output: str) -> WrkResult:
    # wrk pads a latency of a second or more ("1.05s "): trailing blanks allowed.
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.M))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        requests_per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(latency["50"]),
        p99_ms=_ms(latency["99"]),
        requests=int(re.search(r"(\d+) requests in", output).group(1)),  # type: ignore[union-attr]
        non_2xx=int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0,
        errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


def wrk_command(url: str, script: Path, connections: int, seconds: float, threads: int = 1) -> list[str]:
    return [
        ensure_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, int(seconds))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]


def run_wrk(url: str, script: Path, connections: int, seconds: float, env: dict[str, str] | None = None) -> WrkResult:
    out = subprocess.run(
        wrk_command(url, script, connections, seconds),
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=True,
    )
    return parse_wrk(out.stdout)


class BackgroundLoad:
    """A wrk load running beside something measured: started (and given `settle` seconds) on creation, stopped
    with `stop()`, which answers what wrk saw meanwhile."""

    def __init__(
        self, url: str, script: Path, connections: int, env: dict[str, str] | None = None, settle: float = 1.0
    ) -> None:
        self._proc = subprocess.Popen(
            wrk_command(url, script, connections, 3600),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        time.sleep(settle)

    def stop(self) -> WrkResult:
        self._proc.send_signal(signal.SIGINT)
        return parse_wrk(self._proc.communicate(timeout=60)[0])


def table(headers: list[str], rows: list[list[object]]) -> str:
    cells = [headers, *[[f"{c:,.1f}" if isinstance(c, float) else str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
