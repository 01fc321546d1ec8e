"""``oxyfleet run --workers N``: N ingest processes on one shared subscription, from one command.

One ingester is one Python process, so one core at most (the GIL): on a machine with more cores the
way to use them is more processes, and MQTT's shared subscriptions split the messages between them.
This supervisor only starts and watches; each worker is a plain ``oxyfleet run`` with its own

- client id ``<client id>-<i>`` (its own persistent session in the broker),
- spool ``<spool dir>/<i>`` (a spool belongs to one process, see ingest/spool.py),
- metrics port ``<port> + i`` (when the endpoint is on), and instance ``<instance>-<i>``, so that the
  counters of each worker stay one series each in ``oxyfleet_ingest`` and in Prometheus,
- shared group ``OXYFLEET_MQTT__SHARED_GROUP``, or ``oxyfleet`` when that is unset: without a group
  every worker would receive every message.

The workers get the settings through the environment (overrides on top of the supervisor's own
environment and ``.env``). SIGTERM and SIGINT are forwarded; the supervisor exits when all workers
have, non-zero if any failed. When one worker fails the others are stopped too: a supervisor that
restarts workers would hide a crash loop, and the process manager above (systemd, Docker, Kubernetes)
already restarts, with backoff, the command it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Final

import structlog

if TYPE_CHECKING:
    import threading

    from core.settings import Settings

__all__ = ["DEFAULT_GROUP", "Supervisor", "worker_env"]

log = structlog.get_logger("oxyfleet.workers")

DEFAULT_GROUP: Final = "oxyfleet"
_STOP_GRACE_S: Final = 20.0  # an ingester stops within about 10 s; then it is killed


def worker_env(settings: Settings, index: int) -> dict[str, str]:
    """The variables that make worker ``index`` distinct from its siblings."""
    env = {
        "OXYFLEET_MQTT__CLIENT_ID": f"{settings.mqtt.client_id}-{index}",
        "OXYFLEET_MQTT__SHARED_GROUP": settings.mqtt.shared_group or DEFAULT_GROUP,
        "OXYFLEET_SPOOL__DIR": str(settings.spool.dir / str(index)),
        "OXYFLEET_INSTANCE": f"{settings.instance}-{index}"[:64],
    }
    if settings.metrics_port:
        env["OXYFLEET_METRICS_PORT"] = str(settings.metrics_port + index)
    return env


class Supervisor:
    """Starts N ``oxyfleet run`` children, forwards stop signals, and reports how they ended."""

    def __init__(self, settings: Settings, workers: int, duration_s: float | None = None) -> None:
        if settings.metrics_port and settings.metrics_port + workers - 1 > 65535:
            msg = f"OXYFLEET_METRICS_PORT: {settings.metrics_port} + {workers} workers passes 65535"
            raise ValueError(msg)
        self.settings = settings
        self.workers = workers
        self.duration_s = duration_s
        self.children: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        """Start every worker (each validates its own settings and exits 2 if they are wrong)."""
        command = [sys.executable, "-m", "oxyfleet", "run"]
        if self.duration_s is not None:
            command += ["--duration", str(self.duration_s)]
        for i in range(self.workers):
            env = {**os.environ, **worker_env(self.settings, i)}
            self.children.append(subprocess.Popen(command, env=env))  # noqa: S603 - our own command
        log.info(
            "ingest.workers_started",
            workers=self.workers,
            pids=[c.pid for c in self.children],
            group=self.settings.mqtt.shared_group or DEFAULT_GROUP,
        )

    def signal_all(self, signum: int = signal.SIGTERM) -> None:
        """Send ``signum`` to every worker still running."""
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum)

    def wait(self, stop: threading.Event) -> int:
        """Until every worker has exited: 0 if all exited 0, else the first failure's code (or 1)."""
        failed: int | None = None
        stopping_since: float | None = None
        while [c.poll() for c in self.children].count(None):  # poll() every child: it reaps them
            if stop.is_set() and stopping_since is None:
                stopping_since = time.monotonic()
                self.signal_all()
            for i, child in enumerate(self.children):
                code = child.returncode
                if code is not None and code != 0 and failed is None:
                    failed = code if code > 0 else 1
                    log.error("ingest.worker_failed", worker=i, pid=child.pid, exit_code=code)
                    stop.set()  # one down: stop the others, and let the process manager restart us all
            if stopping_since is not None and time.monotonic() - stopping_since > _STOP_GRACE_S:
                log.error("ingest.workers_killed", after_s=_STOP_GRACE_S)
                self.signal_all(signal.SIGKILL)
                stopping_since = time.monotonic() + 3600  # once
            time.sleep(0.1)
        for i, child in enumerate(self.children):
            code = child.returncode
            if code != 0 and failed is None:
                failed = code if code > 0 else 1
                log.error("ingest.worker_failed", worker=i, pid=child.pid, exit_code=code)
        return failed or 0
