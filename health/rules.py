"""Fleet health, the pure part: classify readings, build each unit's state timeline, and account uptime.

No I/O here (the engine in :mod:`health.engine` reads InfluxDB and writes the results), so every
rule is unit-tested with plain data.

The model, in the order it is applied:

1. **Classify** each reading against its model's specification (:func:`classify`): ``power_failure``
   (on battery or no power and not running, or a POWER_FAILURE alarm), ``off`` (reported standby),
   ``underperforming`` with a reason (purity below the critical level, purity low, flow below 80 % of the
   setpoint while running, outlet pressure outside the band, overheating, a device alarm), else
   ``in_spec``. DOCS plants are also judged on their own measurements (:func:`_plant`): product flow
   below 80 % of the demanded setpoint or, without one, of the plant's rated output; product pressure
   outside the model's band; compressor discharge above its limit; feed-air dew point above its limit.
2. **Raw timeline**: a reading's condition holds until the next reading. When no reading follows within
   the no-data limit (``max(3 x reporting interval, 60 s)``), the unit is ``no_data`` from the time its
   next report was due.
3. **Sustain** (anti-flap): a condition that lasts less than the sustain window (2 min) is absorbed into
   the state around it, so a single bad reading or a short gap never flips a unit. A condition that does
   last is booked **from its start**: detection waits for the sustain window, but the accounting does
   not, so uptime is not biased by the detection delay. A run still shorter than the window at the end
   of the evaluated range stays pending (the previous state continues) until a later evaluation confirms it.
4. **Accounting** per minute: seconds in each state, the minute's dominant state and reason. Uptime over
   any range is a plain sum of those seconds, so Grafana and ``oxyfleet uptime`` compute it the same way.

Availability = in_spec / (in_spec + underperforming + power_failure + no_data); ``off`` is excluded and
reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from store.schema import ACCOUNTED, STATES, State

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from devices.catalog import ModelSpec

__all__ = [
    "ACCOUNTED",
    "STATES",
    "Condition",
    "MinuteState",
    "Segment",
    "Transition",
    "accounting_start",
    "availability",
    "classify",
    "minutes",
    "raw_segments",
    "sustain",
    "timeline",
    "transitions",
    "whole_minute",
]

IN_SPEC: Final = State.IN_SPEC
UNDERPERFORMING: Final = State.UNDERPERFORMING
OFF: Final = State.OFF
POWER_FAILURE: Final = State.POWER_FAILURE
NO_DATA: Final = State.NO_DATA
LOW_FLOW_RATIO: Final = 0.8
MINUTE_MS: Final = 60_000
# Device alarms that other rules already account for, or that say nothing about oxygen delivery.
_COVERED_ALARMS: Final = frozenset({"LOW_PURITY", "POWER_FAILURE", "LOW_BATTERY", "HIGH_TEMP"})


@dataclass(frozen=True, slots=True)
class Condition:
    """A unit's state with its reason; ``code`` is the severity used to sort worst first."""

    state: str
    reason: str = ""

    @property
    def code(self) -> int:
        """0 fine or switched off, 1 warning, 2 critical."""
        if self.state == POWER_FAILURE or self.reason == "purity_critical":
            return 2
        if self.state in (UNDERPERFORMING, NO_DATA):
            return 1
        return 0


OK: Final = Condition(IN_SPEC)
_INTERNED: dict[tuple[str, str], Condition] = {}


def _condition(state: str, reason: str) -> Condition:
    """One shared object per condition, so the timeline compares readings by identity (fast path)."""
    key = (state, reason)
    found = _INTERNED.get(key)
    if found is None:
        found = _INTERNED[key] = Condition(state, reason)
    return found


SILENT: Final = Condition(NO_DATA, "no_data")
# Commissioned, nothing ever received: shown on its own and not booked against the unit or its hospital.
NEVER: Final = Condition(State.NEVER_CONNECTED, "never_connected")
_NO_ALARMS: Final[frozenset[str]] = frozenset()


def classify(reading: Mapping[str, Any], spec: ModelSpec) -> Condition:  # noqa: C901, PLR0911 - the rules, in order
    """The condition one reading shows, against its model's specification."""
    raw_alarms = reading.get("alarms")  # usually absent: no set to build for every reading then
    alarms = {a for a in str(raw_alarms).split(",") if a} if raw_alarms else _NO_ALARMS
    running = reading.get("running")
    power = reading.get("power")
    if running is not True and (power in ("battery", "none") or "POWER_FAILURE" in alarms):
        return _condition(POWER_FAILURE, "power_failure")
    if running is False:
        return _condition(OFF, "off")
    purity = reading.get("purity_pct")
    if purity is not None and purity < spec.purity_critical_pct:
        return _condition(UNDERPERFORMING, "purity_critical")
    if purity is not None and purity < spec.purity_low_pct:
        return _condition(UNDERPERFORMING, "purity_low")
    flow, setpoint = reading.get("flow_lpm"), reading.get("setpoint_lpm")
    if flow is not None and setpoint and flow < LOW_FLOW_RATIO * setpoint:
        return _condition(UNDERPERFORMING, "low_flow")
    if spec.kind == "docs":
        plant = _plant(reading, spec)
        if plant is not None:
            return plant
    outlet = reading.get("outlet_kpa")
    if outlet is not None and outlet < spec.outlet_min_kpa:
        return _condition(UNDERPERFORMING, "pressure_low")
    if outlet is not None and outlet > spec.outlet_max_kpa:
        return _condition(UNDERPERFORMING, "pressure_high")
    temp = reading.get("temp_c")
    if (temp is not None and temp > spec.max_temp_c) or "HIGH_TEMP" in alarms:
        return _condition(UNDERPERFORMING, "overheating")
    other = sorted(alarms - _COVERED_ALARMS) if alarms else None  # no sort per reading without alarms
    if other:
        return _condition(UNDERPERFORMING, f"alarm_{other[0].lower()}")
    return OK


def _plant(reading: Mapping[str, Any], spec: ModelSpec) -> Condition | None:
    """A DOCS plant's own rules; None when they find nothing (fields the plant does not send are skipped).

    Product flow is what the beds make; the delivered ``flow_lpm`` follows the hospital's demand, so a
    plant making a tenth of its rating while the wards draw little would pass the setpoint rule alone.
    """
    product = reading.get("product_flow_lpm")
    target = reading.get("setpoint_lpm") or spec.rated_flow_lpm
    if product is not None and product < LOW_FLOW_RATIO * target:
        return _condition(UNDERPERFORMING, "product_flow_low")
    pressure = reading.get("product_kpa")
    if pressure is not None and spec.product_min_kpa is not None and pressure < spec.product_min_kpa:
        return _condition(UNDERPERFORMING, "product_pressure_low")
    if pressure is not None and spec.product_max_kpa is not None and pressure > spec.product_max_kpa:
        return _condition(UNDERPERFORMING, "product_pressure_high")
    compressor = reading.get("compressor_temp_c")
    limit = spec.max_compressor_temp_c
    if compressor is not None and limit is not None and compressor > limit:
        return _condition(UNDERPERFORMING, "compressor_overheating")
    dew = reading.get("dew_point_c")
    if dew is not None and spec.max_dew_point_c is not None and dew > spec.max_dew_point_c:
        return _condition(UNDERPERFORMING, "dew_point_high")
    return None


@dataclass(frozen=True, slots=True)
class Segment:
    """``condition`` held over ``[start_ms, end_ms)``."""

    start_ms: int
    end_ms: int
    condition: Condition

    @property
    def duration_ms(self) -> int:
        """Length of the segment."""
        return self.end_ms - self.start_ms


def _merge(segments: Iterable[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for seg in segments:
        if seg.end_ms <= seg.start_ms:
            continue
        if out and out[-1].condition == seg.condition and out[-1].end_ms == seg.start_ms:
            out[-1] = Segment(out[-1].start_ms, seg.end_ms, seg.condition)
        else:
            out.append(seg)
    return out


def raw_segments(  # noqa: C901 - a single loop with its fast path first
    readings: Sequence[tuple[Any, ...]], start_ms: int, end_ms: int, interval_ms: int, no_data_ms: int
) -> list[Segment]:
    """Conditions over ``[start_ms, end_ms)`` from time-sorted readings ``(time_ms, condition, ...)``.

    A reading's condition lasts until the next reading; if none comes within ``no_data_ms``, the unit is
    ``no_data`` from the time its next report was due (``interval_ms`` after the last one). Readings may
    begin before ``start_ms`` (context). This runs for every reading of every unit each cycle, so the
    common case - the same condition as the reading before, no gap - costs one comparison.
    """
    spans: list[list[Any]] = []

    def add(begin: int, until: int, condition: Condition) -> None:
        begin, until = max(begin, start_ms), min(until, end_ms)
        if until <= begin:
            return
        if spans and spans[-1][1] == begin and spans[-1][2] == condition:
            spans[-1][1] = until
        else:
            spans.append([begin, until, condition])

    run: Condition | None = None
    run_start = last = start_ms
    for reading in readings:
        t, condition = reading[0], reading[1]
        if t >= end_ms:
            break
        if run is not None:
            if t - last > no_data_ms:
                add(run_start, last + interval_ms, run)
                add(last + interval_ms, t, SILENT)
            elif condition is run or condition == run:
                last = t
                continue
            else:
                add(run_start, t, run)
        elif t > start_ms:
            add(start_ms, t, SILENT)  # nothing known before the first reading
        run, run_start, last = condition, t, t
    if run is None:
        return [Segment(start_ms, end_ms, SILENT)]
    if end_ms - last > no_data_ms:
        add(run_start, last + interval_ms, run)
        add(last + interval_ms, end_ms, SILENT)
    else:
        add(run_start, end_ms, run)
    return [Segment(a, b, c) for a, b, c in spans]


def sustain(runs: Sequence[Segment], sustain_ms: int, prior: Condition | None = None) -> list[Segment]:
    """Absorb runs shorter than ``sustain_ms`` into the state around them; long runs count from their start.

    ``prior`` is the state in force before the range (from the stored timeline): a first run equal to it
    is a continuation, and a short first run is absorbed into it. Without a prior, short runs at the start
    take the state of the first lasting run (nothing is known before it, and a blip is not an episode).
    The last run, if still shorter than the window, is pending and absorbed too; a later evaluation books
    it from its start once it has lasted.
    """
    out: list[Segment] = []
    current = prior
    merged = _merge(runs)
    if current is None:
        current = next((r.condition for r in merged if r.duration_ms >= sustain_ms), None)
    for run in merged:
        lasting = run.duration_ms >= sustain_ms or (not out and run.condition == prior)
        if lasting or current is None:
            current = run.condition
        out.append(Segment(run.start_ms, run.end_ms, current))
    return _merge(out)


def accounting_start(
    commissioned_ms: int, first_reading_ms: int | None, start_ms: int, end_ms: int
) -> tuple[int, int]:
    """``(begin, first)``: nothing is booked before ``begin`` (commissioning); ``[begin, first)`` is never_connected.

    ``first`` is the unit's first ever reading clipped to the range (``end_ms`` when it never reported).
    """
    begin = min(max(start_ms, commissioned_ms), end_ms)
    first = end_ms if first_reading_ms is None else min(max(begin, first_reading_ms), end_ms)
    return begin, first


def timeline(
    readings: Sequence[tuple[Any, ...]],
    start_ms: int,
    end_ms: int,
    *,
    interval_ms: int,
    sustain_ms: int = 120_000,
    prior: Condition | None = None,
) -> list[Segment]:
    """The unit's effective states over ``[start_ms, end_ms)``."""
    no_data_ms = max(3 * interval_ms, 60_000)
    return sustain(raw_segments(readings, start_ms, end_ms, interval_ms, no_data_ms), sustain_ms, prior)


# Shared, never mutated: the seconds of a minute spent entirely in one state.
_WHOLE_MINUTE: Final = {state: {s: (60.0 if s == state else 0.0) for s in STATES} for state in STATES}


def whole_minute(state: str) -> dict[str, float]:
    """The seconds of a minute spent entirely in ``state`` (shared: never mutate it)."""
    return _WHOLE_MINUTE[state]


@dataclass(frozen=True, slots=True)
class MinuteState:
    """One minute of one unit: the dominant condition and the seconds spent in each state."""

    start_ms: int
    condition: Condition
    seconds: dict[str, float]


def minutes(segments: Sequence[Segment], start_ms: int, end_ms: int) -> list[MinuteState]:
    """Per-minute accounting of complete minutes in ``[start_ms, end_ms)`` (one sweep over the segments)."""
    out = []
    first = start_ms - start_ms % MINUTE_MS
    k = 0
    n = len(segments)
    for m in range(first, end_ms - MINUTE_MS + 1, MINUTE_MS):
        m_end = m + MINUTE_MS
        while k < n and segments[k].end_ms <= m:
            k += 1
        if k < n and segments[k].start_ms <= m and segments[k].end_ms >= m_end:  # the usual case: one segment
            c = segments[k].condition
            out.append(MinuteState(m, c, _WHOLE_MINUTE[c.state]))
            continue
        seconds = dict.fromkeys(STATES, 0.0)
        longest: dict[Condition, int] = {}
        j = k
        while j < n and segments[j].start_ms < m_end:
            seg = segments[j]
            overlap = min(seg.end_ms, m_end) - max(seg.start_ms, m)
            if overlap > 0:
                seconds[seg.condition.state] += overlap / 1000
                longest[seg.condition] = longest.get(seg.condition, 0) + overlap
            j += 1
        if longest:
            dominant = max(longest, key=lambda c: (longest[c], c.code))
            out.append(MinuteState(m, dominant, seconds))
    return out


@dataclass(frozen=True, slots=True)
class Transition:
    """The unit went from one condition to another at ``at_ms``."""

    at_ms: int
    before: Condition
    after: Condition


def transitions(segments: Sequence[Segment], prior: Condition | None = None) -> list[Transition]:
    """State changes along a timeline (including from ``prior`` into the first segment)."""
    out = []
    previous = prior
    for seg in segments:
        if previous is not None and seg.condition != previous:
            out.append(Transition(seg.start_ms, previous, seg.condition))
        previous = seg.condition
    return out


def availability(seconds: Mapping[str, float]) -> float | None:
    """In-spec share of accounted time (``off`` excluded); None when nothing was accounted."""
    accounted = sum(seconds.get(s, 0.0) for s in ACCOUNTED)
    return seconds.get(IN_SPEC, 0.0) / accounted if accounted else None
