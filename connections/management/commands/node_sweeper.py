"""Run the sweepers in a loop: re-nudge lost or backed-off pipeline work and node-to-node delivery.

django-q2's scheduler has minute resolution; a node that waits for a peer to come back wants seconds.
"""

from __future__ import annotations

import signal
import time
from typing import Any

from django.core.management.base import BaseCommand
from django.db import close_old_connections


class Command(BaseCommand):
    help = (
        "Every few seconds: re-nudge due delivery to peer nodes, poll private-mode peers, sweep the "
        "pipeline, send due alerts."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--interval", type=float, default=2.0, help="Seconds between sweeps.")
        parser.add_argument("--once", action="store_true", help="Sweep once and exit.")

    def handle(self, *args: Any, interval: float, once: bool, **opts: Any) -> None:
        from connections.alerts import send_due as send_alerts
        from connections.tasks import sweep as sweep_delivery
        from exalate_node.health import SweeperHeartbeat
        from instances.polling import poll_due as poll_trackers
        from replicas.tasks import sweep as sweep_pipeline

        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            from connections.tasks import announce_all

            announce_all()  # peers that queued messages for us retry now, not after their backoff
        except Exception as exc:
            self.stderr.write(f"Could not announce this node to its peers: {type(exc).__name__}: {exc}")
        heartbeat = SweeperHeartbeat()  # what /readyz reads: this loop's, and the worker's through a task
        while not stopping:
            close_old_connections()
            try:
                heartbeat.tick()
            except Exception as exc:
                self.stderr.write(f"Heartbeat failed: {type(exc).__name__}: {exc}")
            try:
                sweep_delivery()
                sweep_pipeline()
                poll_trackers()
                send_alerts()
            except Exception as exc:  # a database hiccup must not end the loop
                self.stderr.write(f"Sweep failed: {type(exc).__name__}: {exc}")
            if once:
                return
            time.sleep(interval)
