"""Hostile input all the way into the real InfluxDB: every line we build is accepted, and no stored
series appears that a well-formed message could not have produced (no injected measurement, tag or unit).

Uses the strategies of tests/unit/test_hostile_input.py with a small fixed budget (each example is a write).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.spec import UNIT_ID_RE
from ingest.decode import Decoder, Inbound, Reason
from store.lineproto import LineBuilder
from store.writer import InfluxSink, V1Transport

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location(
    "hostile", Path(__file__).resolve().parent.parent / "unit" / "test_hostile_input.py"
)
assert _spec is not None and _spec.loader is not None
hostile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hostile)


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=st.lists(st.tuples(hostile.TOPIC, hostile.PAYLOAD), min_size=1, max_size=8))
def test_hostile_batches_store_cleanly(influx, messages) -> None:
    decoder, builder = Decoder(check_time=False), LineBuilder(instance="hostile")
    lines = []
    for topic, payload in messages:
        out = decoder.decode(Inbound(topic, payload, hostile.NOW_NS))
        lines += [builder.telemetry(r) for r in out.readings] + [builder.rejected(r) for r in out.rejections]
        lines += [builder.connection(c) for c in out.connections]
    sink = InfluxSink(V1Transport(influx.url, influx.database))
    try:
        report = sink.write(lines)
    finally:
        sink.close()
    assert report.rejected == {}, report.rejected  # InfluxDB accepted every line as we built it
    measurements = {r["name"] for r in influx.rows("SHOW MEASUREMENTS")}
    assert measurements <= {"telemetry", "rejected", "unit_connection"}
    for measurement in measurements & {"telemetry", "unit_connection"}:
        units = {r["value"] for r in influx.rows(f'SHOW TAG VALUES FROM {measurement} WITH KEY = "unit_id"')}
        assert all(UNIT_ID_RE.fullmatch(u) for u in units), units
    if "rejected" in measurements:
        reasons = {r["value"] for r in influx.rows('SHOW TAG VALUES FROM rejected WITH KEY = "reason"')}
        assert reasons <= {r.value for r in Reason}
