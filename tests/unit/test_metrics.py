"""/metrics of the ingester through prometheus_client: names, types, HELP, one registry per server."""

from __future__ import annotations

import urllib.request
from typing import TYPE_CHECKING

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from ingest.spool import Spool
from ingest.stats import METRICS, PREFIX, Stats, scrape, serve_metrics
from tests.unit.test_pipeline import FakeSource, RecordingTransport, make, msg, run_until_drained

if TYPE_CHECKING:
    from pathlib import Path


def test_every_snapshot_value_has_a_name_a_type_and_help(tmp_path: Path) -> None:
    """A value added to the snapshot without an entry in METRICS would be exported as an undescribed gauge."""
    source = FakeSource([msg(0), msg(1, b"{")])
    pipeline = make(source, RecordingTransport(), spool=Spool(tmp_path, 1 << 20))
    run_until_drained(pipeline, source)
    keys = {k for k in pipeline.snapshot() if not k.startswith("rejected_")}
    keys |= {"mqtt_subscribed", "broker_stored_messages", "broker_stored_bytes"}  # the MQTT source's
    assert keys <= set(METRICS), keys - set(METRICS)
    for key, (name, kind, _scale, text) in METRICS.items():
        assert kind in ("counter", "gauge") and text.endswith("."), key
        assert not name.endswith(("_total", "_ms", "_s")), name  # prometheus_client adds _total; base units


def test_two_servers_in_one_process_each_serve_their_own_numbers() -> None:
    a, b = Stats(messages_received=3, last_batch_ms=250.0), Stats(messages_received=7)
    a.rejected_by_reason["not_json"] = 2
    servers = [serve_metrics("127.0.0.1", 0, s.snapshot, name) for s, name in ((a, "ing-a"), (b, "ing-b"))]
    try:
        urls = [f"http://127.0.0.1:{s.server_address[1]}/metrics" for s in servers if s is not None]
        with urllib.request.urlopen(urls[0], timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            families = {f.name: f for f in text_string_to_metric_families(resp.read().decode())}
        received = families[f"{PREFIX}messages_received"]
        assert received.type == "counter" and received.documentation
        assert [(s.name, s.value) for s in received.samples] == [(f"{PREFIX}messages_received_total", 3)]
        assert families[f"{PREFIX}last_batch_seconds"].samples[0].value == 0.25
        by_reason = families[f"{PREFIX}points_rejected_by_reason"].samples
        assert [(s.labels, s.value) for s in by_reason] == [({"reason": "not_json"}, 2)]
        assert families[f"{PREFIX}ingester_info"].samples[0].labels == {"ingester": "ing-a"}
        assert families["process_cpu_seconds"].type == "counter"
        assert scrape(urls[1])["messages_received"] == 7
        # A Prometheus that asks for OpenMetrics gets it, with the info metric typed as such.
        ask = urllib.request.Request(
            urls[0], headers={"Accept": "application/openmetrics-text; version=1.0.0"}
        )
        with urllib.request.urlopen(ask, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
            text = resp.read().decode()
        # The OpenMetrics parser carries no annotations (the text one does).
        open_families = {f.name: f for f in openmetrics_families(text)}  # type: ignore[no-untyped-call]
        assert open_families[f"{PREFIX}ingester"].type == "info"
        assert open_families[f"{PREFIX}messages_received"].samples[0].value == 3
        assert scrape(urls[0])["rejected_not_json"] == 2
    finally:
        for server in servers:
            if server is not None:
                server.shutdown()
                server.server_close()
    assert scrape(urls[0]) == {}  # nobody answers
