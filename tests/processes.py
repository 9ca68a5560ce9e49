"""Running real `dlr-tracker` processes for tests: start, wait until ready, stop."""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2


def _ephemeral_ports() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


_EPHEMERAL = _ephemeral_ports()
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port no one listens on, for a process about to bind it, taken from below the kernel's ephemeral range.

    A port the kernel chose (bind to 0, then close) goes back to that range: before the service binds it, any
    outgoing connection (the service's own to PostgreSQL, a dispatcher's) may take it as its local port, and
    the service then fails to start with "address in use" (CI saw `serve` exit 3 that way). Ports below the
    range are never given to outgoing connections; none is handed out twice in one test run.
    """
    candidates = [port for port in range(20000, min(_EPHEMERAL.start, 32768)) if port not in _HANDED_OUT]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def command() -> list[str]:
    script = shutil.which("dlr-tracker", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "service.cli"]


class ServiceProcess:
    """One `dlr-tracker serve` (or another long-running command: `dispatch`) on a free port, its output kept in a
    log file for failures."""

    def __init__(self, log_dir: Path, *, env: dict[str, str], name: str = "serve", run: str = "serve") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / f"{name}-{self.port}.log"
        full_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        full_env.update({"HOST": "127.0.0.1", "PORT": str(self.port), "LOG_LEVEL": "info"}, **env)
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([*command(), run], env=full_env, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60, path: str = "/readyz") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if httpx2.get(f"{self.url}{path}", timeout=1).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"service not ready in {timeout}s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"service did not stop in {timeout}s:\n{self.output()}") from None

    def output(self, tail: int | None = 5000) -> str:
        """The end of what the service printed (for failure messages), or all of it with `tail=None`."""
        text = self.log.read_text(errors="replace")
        return text if tail is None else text[-tail:]
