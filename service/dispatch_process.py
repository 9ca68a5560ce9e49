"""DispatchProcess: the dispatching process `serve` runs beside its workers (DLR_SUBSCRIPTION_DISPATCH=process),
started again whenever it dies while `serve` goes on.

Without a watch, a dispatcher that died (a crash, the OOM killer, a `kill -9`) left every subscription
undelivered, silently, until `serve` itself restarted: the events wait in the feed, so nothing is lost, but
nothing arrives either. It is started with the same `service` package as `serve`: not the one a `service`
directory in the working directory would give `python -m` (`-P`, and the package's own directory first).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import service

logger = logging.getLogger("dlr_tracker")

FIRST_WAIT = 1.0  # seconds before a dispatcher that ended is started again
LONGEST_WAIT = 60.0  # the wait doubles while it keeps ending within STEADY seconds of its start, up to this
STEADY = 60.0


ARGV = [sys.executable, "-P", "-m", "service.cli", "dispatch"]


class DispatchProcess:
    def __init__(self, env: dict[str, str]) -> None:
        # This very package's directory first: what `serve` runs is what the dispatcher imports.
        root = str(Path(service.__file__).resolve().parent.parent)
        self._env = {**env, "PYTHONPATH": os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._watch: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            self._proc = subprocess.Popen(ARGV, env=self._env)
        self._watch = threading.Thread(target=self._watch_forever, name="dispatch-process-watch", daemon=True)
        self._watch.start()

    def _watch_forever(self) -> None:
        wait = FIRST_WAIT
        while True:
            with self._lock:
                proc = self._proc
            assert proc is not None  # started before the watch
            started = time.monotonic()
            code = proc.wait()
            if self._stopping.is_set():
                return
            if code == 0:
                # It stopped on purpose: a SIGTERM or Ctrl-C of its own (a terminal's reaches it with `serve`'s).
                logger.warning("the dispatching process stopped: subscriptions are not delivered by this serve")
                return
            if time.monotonic() - started >= STEADY:
                wait = FIRST_WAIT
            logger.error(
                "the dispatching process ended (exit code %s): subscriptions are not delivered until it is back;"
                " starting it again in %.0f s",
                code,
                wait,
            )
            if self._stopping.wait(wait):
                return
            with self._lock:
                if self._stopping.is_set():
                    return
                self._proc = subprocess.Popen(ARGV, env=self._env)
                logger.info("dispatching process started again (pid %s)", self._proc.pid)
            # The next wait is longer while it keeps dying soon after its start: a dispatcher that cannot start
            # (its database away, say) is not restarted in a tight loop.
            wait = min(wait * 2, LONGEST_WAIT)

    def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds: what it was delivering is tried again once its leases
        run out."""
        self._stopping.set()
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._watch is not None:
            self._watch.join(grace)
