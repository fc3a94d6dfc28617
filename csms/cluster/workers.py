"""``csms serve --workers N``: N processes serving one port on this machine, each a member of the cluster.

Each worker binds the port with SO_REUSEPORT, so the kernel spreads new connections over them (each
accepts on its own socket; no shared accept queue to fight over). The supervisor migrates the database
once (if asked to), starts the workers, restarts one that dies, and stops them all on SIGINT or SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from csms.settings import Settings

log = logging.getLogger("csms.cluster")

RESTART_DELAY_S = 1.0
EARLY_EXIT_S = 10.0  # a worker that dies this soon after starting, three times in a row, stops the lot
EARLY_EXITS_TOLERATED = 3


class Supervisor:
    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.count = workers
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.started_at: dict[int, float] = {}
        self.early_exits: dict[int, int] = {}
        self.stopping = False

    def _spawn(self, index: int) -> None:
        command = [
            sys.executable,
            "-m",
            "csms",
            "serve",
            "--reuse-port",
            "--worker-index",
            str(index),
            "--host",
            self.settings.host,
            "--port",
            str(self.settings.port),
        ]
        env = {**os.environ, "CSMS_AUTO_MIGRATE": "false"}  # the supervisor migrated already
        self.children[index] = subprocess.Popen(command, env=env)
        self.started_at[index] = time.monotonic()

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def run(self) -> int:
        """Run until stopped; the exit status (0 after a requested stop)."""
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGTERM, self._stop)
        for index in range(self.count):
            self._spawn(index)
        log.info("%d workers serving port %d", self.count, self.settings.port)
        status = 0
        while self.children:
            time.sleep(0.2)
            for index, child in list(self.children.items()):
                code = child.poll()
                if code is None:
                    continue
                del self.children[index]
                if self.stopping:
                    continue
                lived = time.monotonic() - self.started_at[index]
                self.early_exits[index] = self.early_exits.get(index, 0) + 1 if lived < EARLY_EXIT_S else 0
                if self.early_exits[index] >= EARLY_EXITS_TOLERATED:
                    log.error("worker %d keeps failing at start-up (exit %s); stopping", index, code)
                    status = 1
                    self._stop(signal.SIGTERM, None)
                    continue
                log.warning("worker %d exited (%s); starting it again", index, code)
                time.sleep(RESTART_DELAY_S)
                self._spawn(index)
        return status
