"""The ingest benchmark's logic that decides its figures: the pre-encoded stream, PUBACK counting, statistics.

Nothing here is timed; speed is measured by scripts/bench, never asserted.
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


publisher = _load("publisher")
harness = _load("ingest_bench")


def _packets(data: bytes) -> list[tuple[int, bytes, int, bytes]]:
    """(first byte, topic, packet id, payload) of each PUBLISH in a chunk, decoded independently."""
    out, pos = [], 0
    while pos < len(data):
        first = data[pos]
        pos += 1
        length, shift = 0, 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        body = data[pos : pos + length]
        pos += length
        (topic_len,) = struct.unpack("!H", body[:2])
        topic = body[2 : 2 + topic_len]
        rest = body[2 + topic_len :]
        packet_id = struct.unpack("!H", rest[:2])[0] if first & 0x06 else 0
        out.append((first, topic, packet_id, rest[2:] if first & 0x06 else rest))
    return out


def test_the_stream_holds_every_reading_once_round_robin_with_distinct_unit_and_ts():
    now = 1_800_000_000_000
    stream = publisher.encode_stream("p/oxygen", 1003, 10, 1, mode="live", now_ms=now, chunk=100)
    assert stream.messages == 1003
    assert stream.counts == [100] * 10 + [3]
    packets = [p for chunk in stream.chunks for p in _packets(chunk)]
    assert len(packets) == 1003
    seen = set()
    for i, (first, topic, packet_id, payload) in enumerate(packets):
        assert first == 0x32  # PUBLISH, QoS 1
        assert topic == f"p/oxygen/concentrator/LOAD-{i % 10:06d}/telemetry".encode()
        assert packet_id == i + 1
        reading = json.loads(payload)
        assert reading["seq"] == i // 10
        seen.add((topic, reading["ts"]))
    assert len(seen) == 1003
    assert stream.first_ts == now + 60_000
    assert stream.last_ts == now + 60_000 + 100


def test_live_readings_stay_ahead_of_the_late_threshold_and_backlog_readings_are_all_late():
    now = 1_800_000_000_000
    live = publisher.encode_stream("p", 5, 5, 1, mode="live", now_ms=now)
    backlog = publisher.encode_stream("p", 5, 5, 1, mode="backlog", now_ms=now)
    assert now < live.first_ts <= now + 5 * 60_000  # accepted, and not late during a run
    assert backlog.last_ts < now - 30_000  # older than the ingester's late threshold


def test_packet_ids_wrap_without_zero_and_qos0_has_none():
    stream = publisher.encode_stream("p", 65536, 7, 1, chunk=70000)
    ids = [p[2] for p in _packets(stream.chunks[0])]
    assert ids[65534] == 65535
    assert ids[65535] == 1
    assert 0 not in ids
    qos0 = _packets(publisher.encode_stream("p", 3, 1, 0).chunks[0])
    assert [p[0] for p in qos0] == [0x30] * 3
    assert json.loads(qos0[0][3])["seq"] == 0


def test_a_bad_stream_request_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        publisher.encode_stream("p", 0, 1, 1)


def test_pubacks_split_across_reads_are_counted_once_complete():
    acks = publisher.AckCounter()
    data = b"".join(bytes([0x40, 2, 0, i]) for i in range(1, 6))
    assert acks.feed(data[:6]) == 1
    assert acks.feed(data[6:13]) == 3
    assert acks.feed(data[13:]) == 5


def test_anything_but_a_puback_is_an_error_not_a_count():
    with pytest.raises(ConnectionError, match="other than PUBACKs"):
        publisher.AckCounter().feed(b"\x40\x02\x00\x01\xe0\x00\x00\x00")


def test_spread_is_median_min_max_of_what_was_measured():
    assert harness.spread([3.0, 1.0, 2.0]) == "2 (1\u20133)"
    assert harness.spread([1.234, None, 2.0], 2) == "1.62 (1.23\u20132.00)"
    assert harness.spread([12_345.0]) == "12,345"
    assert harness.spread([None, None]) == "n/a"


def _result(name: str, rate: float, **kw: object):
    return harness.Result(name, 1000, 1000, 1000 / rate, {"consumer": 50.0}, 40.0, **kw)


def test_ratios_are_per_run_and_only_against_peers():
    runs = [
        {"oxyfleet": _result("oxyfleet", 12_000), "naive": _result("naive", 24_000),
         "oxyfleet 3.1.1": _result("oxyfleet 3.1.1", 18_000)},
        {"oxyfleet": _result("oxyfleet", 15_000), "naive": _result("naive", 20_000)},
        {"naive": _result("naive", 10_000)},  # no oxyfleet in this run: no ratio from it
    ]  # fmt: skip
    ratios = harness.ratios(runs, "oxyfleet")
    assert ratios["naive"] == pytest.approx([0.5, 0.75])
    assert "oxyfleet 3.1.1" not in ratios
    assert "oxyfleet" not in ratios


def test_summary_has_a_row_per_consumer_with_ratios_lost_and_points():
    runs = [
        {
            "naive": _result("naive", 20_000, points={"telemetry": 1000}),
            "oxyfleet": _result("oxyfleet", 10_000, points={"telemetry": 1000, "late_data": 50}),
            "oxyfleet 3.1.1": _result("oxyfleet 3.1.1", 16_000),
        }
    ]
    rows = harness.summary(runs)
    header, naive, oxy, oxy311 = rows
    assert header[:4] == ["consumer", "msg/s", "oxyfleet / it", "oxyfleet 3.1.1 / it"]
    assert naive[:4] == ["naive", "20,000", "0.50", "0.80"]
    assert oxy[2:4] == ["", ""]
    assert oxy[header.index("points/reading")] == "1.050"
    assert oxy311[header.index("points/reading")] == "n/a"
    assert naive[header.index("lost")] == "0"
    assert harness.markdown(rows).splitlines()[1].count("---") == len(header)


def test_lost_and_points_per_reading_count_against_what_was_published():
    r = harness.Result("oxyfleet drain", 200, 190, 1.0, {}, 1.0, {"telemetry": 190, "late_data": 190})
    assert r.lost == 10
    assert r.points_per_reading == pytest.approx(1.9)
    assert harness.Result("paho 5", 200, 200, 1.0, {}, 1.0).points_per_reading is None


def test_percentiles_use_nearest_rank():
    values = list(range(1, 101))
    assert harness.percentiles(values) == {"p50_ms": 51, "p99_ms": 100}
    assert harness.percentiles([])["p99_ms"] != harness.percentiles([])["p99_ms"]  # NaN


def test_the_end_is_the_first_poll_with_every_point_accepted():
    history = [(1.0, 0), (2.0, 5000), (3.0, 9999), (4.0, 10_000), (5.0, 10_001)]
    assert harness.queryable_at(history, 10_000) == 4.0
    assert harness.needed({"telemetry": 9000, "late_data": 1000, "oxyfleet_ingest": 3}) == 10_000


def test_with_points_missing_the_end_is_when_the_counter_last_moved():
    history = [(1.0, 0), (2.0, 7000), (3.0, 9000), (4.0, 9000), (5.0, 9000)]
    assert harness.queryable_at(history, 10_000) == 3.0


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _target(
    monkeypatch: pytest.MonkeyPatch, counter: Callable[[float], int], stored: Callable[[float], int]
) -> tuple[Any, _Clock]:
    clock = _Clock()
    monkeypatch.setattr(harness.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(harness.time, "sleep", clock.sleep)
    target = object.__new__(harness.Target)
    target.written = lambda: counter(clock.now)
    target.stored = lambda: stored(clock.now)
    return target, clock


def test_the_wait_ends_when_an_exact_count_confirms_every_reading(monkeypatch):
    # The counter passes 1,000 early (markers are points too); the exact count decides.
    target, _ = _target(monkeypatch, lambda t: int(t * 1000), lambda t: int(t * 500))
    stored, history = target.wait_stored(1000)
    assert stored >= 1000
    assert history[-1][1] >= 2000


def test_the_ingesters_stats_points_alone_do_not_keep_a_stalled_wait_alive(monkeypatch):
    # 950 points at once, then one stats point every 10 s: stalled, gives up after STALL_S.
    target, clock = _target(monkeypatch, lambda t: 950 + int(t // 10), lambda _t: 950)
    stored, _ = target.wait_stored(1000)
    assert stored == 950
    assert harness.STALL_S <= clock.now < harness.STALL_S + 1


def test_no_stall_is_declared_while_the_publisher_still_publishes(monkeypatch):
    target, clock = _target(monkeypatch, lambda t: 0 if t < 100 else 1000, lambda t: 0 if t < 100 else 1000)
    stored, _ = target.wait_stored(1000, busy=lambda: clock.now < 90)
    assert stored == 1000
    assert clock.now >= 100
