"""One Prometheus registry per server, for the ingester's and the health engine's ``/metrics``."""

from __future__ import annotations

from prometheus_client import GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["registry"]


def registry(*collectors: Collector) -> CollectorRegistry:
    """A registry of its own with ``collectors`` plus the process, platform and GC collectors.

    Not prometheus_client's global default registry: tests run several servers in one process, and
    nothing registers metrics by import side effect. ``collectors`` read the process's numbers at
    scrape time, so the hot path never touches a metric object.
    """
    reg = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    for collector in collectors:
        reg.register(collector)
    return reg
