"""What a unit reports, healthy or failing: the fault models of the fleet simulator. Pure functions.

Each fault is an episode ``[start_ms, end_ms]`` on one unit with parameters fixed when it is scheduled,
so the ground truth (which the health engine's tests compare against) is known exactly: e.g. a sieve-bed
wear episode states the times its purity crosses 90 % and 82 %.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import random
    from collections.abc import Iterable, Sequence

    from devices.catalog import ModelSpec

__all__ = [
    "DOCS_KINDS",
    "GENERIC_KINDS",
    "Fault",
    "FaultKind",
    "UnitState",
    "apply_faults",
    "healthy_reading",
    "plan_faults",
    "sieve_purity",
]

SIEVE_FLOOR_PCT: Final = 75.0


class FaultKind(StrEnum):
    """Failure modes seen in concentrator and PSA fleets."""

    SIEVE_WEAR = "sieve_wear"  # purity drifts below 90 % then 82 % while flow looks fine
    FLOW_RESTRICTION = "flow_restriction"  # kinked tubing, clogged filter: flow well below setpoint
    POWER_FAILURE = "power_failure"  # mains lost: on battery, not producing oxygen
    SWITCHED_OFF = "switched_off"  # standby by staff: not a failure, excluded from availability
    OVERHEATING = "overheating"  # blocked vents, hot room: temperature above the model's maximum
    DEVICE_ALARM = "device_alarm"  # the unit raises an alarm code itself
    NETWORK_LOSS = "network_loss"  # link down: readings buffered, uploaded late as a batch
    SILENT = "silent"  # dead SIM / telemetry module: nothing arrives, nothing uploaded later
    CLOCK_SKEW = "clock_skew"  # the device clock runs off by a fixed amount
    SENSOR_GLITCH = "sensor_glitch"  # one absurd value in one reading
    # DOCS plants only (scheduled on DOCS units; a concentrator drawn for one gets no fault):
    PRODUCT_FLOW_LOSS = "product_flow_loss"  # worn valves, weak compressor: the beds make far below rating
    PRODUCT_PRESSURE_LOSS = "product_pressure_loss"  # leak after the beds: product line below its band
    COMPRESSOR_OVERHEAT = "compressor_overheat"  # failing cooler, low oil: discharge above its limit
    WET_AIR = "wet_air"  # dryer failure: feed-air dew point above its limit (ruins the sieve beds)


DOCS_KINDS: Final = (
    FaultKind.PRODUCT_FLOW_LOSS,
    FaultKind.PRODUCT_PRESSURE_LOSS,
    FaultKind.COMPRESSOR_OVERHEAT,
    FaultKind.WET_AIR,
)
# The kinds any unit can have: the default plan, as before DOCS kinds existed.
GENERIC_KINDS: Final = tuple(k for k in FaultKind if k not in DOCS_KINDS)


@dataclass(frozen=True, slots=True)
class Fault:
    """One scheduled fault episode (the ground truth)."""

    unit_id: str
    kind: FaultKind
    start_ms: int
    end_ms: int
    params: dict[str, Any] = field(default_factory=dict)

    def active(self, t_ms: int) -> bool:
        """Whether the episode covers ``t_ms`` (a glitch lasts one reporting interval: one reading)."""
        return self.start_ms <= t_ms < self.end_ms

    def record(self) -> dict[str, Any]:
        """The ground-truth line for this episode."""
        return {
            "type": "fault",
            "unit_id": self.unit_id,
            "fault": self.kind.value,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
            **self.params,
        }


@dataclass(slots=True)
class UnitState:
    """A simulated unit: identity, model and slowly varying state."""

    unit_id: str
    kind: str
    spec: ModelSpec
    purity_base: float
    run_hours: float
    seq: int = 0
    faults: list[Fault] = field(default_factory=list)
    buffered: list[dict[str, Any]] = field(default_factory=list)  # readings held during a network loss


def healthy_reading(unit: UnitState, t_ms: int, rng: random.Random, interval_s: float) -> dict[str, Any]:
    """A reading of a unit in spec: flow at setpoint, purity near its base, pressure inside the band."""
    spec = unit.spec
    unit.seq += 1
    unit.run_hours += interval_s / 3600
    setpoint = spec.rated_flow_lpm
    mid_kpa = (spec.outlet_min_kpa + spec.outlet_max_kpa) / 2
    half_band = (spec.outlet_max_kpa - spec.outlet_min_kpa) / 2
    reading: dict[str, Any] = {
        "ts": t_ms,
        "seq": unit.seq,
        "purity_pct": round(min(unit.purity_base + rng.gauss(0, 0.2), spec.purity_max_pct), 2),
        "flow_lpm": round(setpoint * rng.uniform(0.97, 1.02), 2),
        "setpoint_lpm": setpoint,
        "outlet_kpa": round(mid_kpa + rng.uniform(-0.3, 0.3) * half_band, 1),
        "temp_c": round(rng.uniform(30.0, spec.max_temp_c - 8), 1),
        "run_hours": round(unit.run_hours, 3),
        "power": "mains",
        "running": True,
        "alarms": [],
    }
    if unit.kind == "docs":
        reading.update(
            {
                "product_flow_lpm": round(setpoint * rng.uniform(1.0, 1.08), 1),
                "product_kpa": round(mid_kpa + 20 + rng.uniform(-5, 5), 1),
                "tank_kpa": round(mid_kpa + 60 + rng.uniform(-10, 10), 1),
                "feed_kpa": round(rng.uniform(650, 750), 1),
                "dew_point_c": round(rng.uniform(-50, -42), 1),
                "compressor_temp_c": round(rng.uniform(70, 90), 1),
            }
        )
    return reading


def sieve_purity(base: float, start_ms: int, end_ms: int, t_ms: int) -> float:
    """Purity during sieve-bed wear: a straight line from ``base`` at start to 75 % at the end."""
    progress = min(max((t_ms - start_ms) / (end_ms - start_ms), 0.0), 1.0)
    return base - (base - SIEVE_FLOOR_PCT) * progress


def _crossing(base: float, start_ms: int, end_ms: int, level: float) -> int | None:
    if base <= level:
        return start_ms
    if level <= SIEVE_FLOOR_PCT:
        return None
    return start_ms + round((base - level) / (base - SIEVE_FLOOR_PCT) * (end_ms - start_ms))


def apply_faults(reading: dict[str, Any], unit: UnitState, t_ms: int) -> dict[str, Any]:  # noqa: C901, PLR0912 - one branch per fault
    """The reading as a unit with the faults active at ``t_ms`` would report it."""
    spec = unit.spec
    for fault in unit.faults:
        if not fault.active(t_ms):
            continue
        kind, p = fault.kind, fault.params
        if kind is FaultKind.SIEVE_WEAR:
            reading["purity_pct"] = round(
                sieve_purity(unit.purity_base, fault.start_ms, fault.end_ms, t_ms), 2
            )
            if reading["purity_pct"] < spec.purity_critical_pct:
                reading["alarms"] = [*reading["alarms"], "LOW_PURITY"]
        elif kind is FaultKind.FLOW_RESTRICTION:
            reading["flow_lpm"] = round(reading["setpoint_lpm"] * p["flow_factor"], 2)
        elif kind in (FaultKind.POWER_FAILURE, FaultKind.SWITCHED_OFF):
            for name in ("purity_pct", "outlet_kpa", "product_flow_lpm", "product_kpa"):
                reading.pop(name, None)
            reading["flow_lpm"] = 0.0
            reading["running"] = False
            if kind is FaultKind.POWER_FAILURE:
                reading["power"] = "battery"
                reading["alarms"] = [*reading["alarms"], "POWER_FAILURE"]
        elif kind is FaultKind.OVERHEATING:
            reading["temp_c"] = round(spec.max_temp_c + p["excess_c"], 1)
            reading["alarms"] = [*reading["alarms"], "HIGH_TEMP"]
        elif kind is FaultKind.DEVICE_ALARM:
            reading["alarms"] = [*reading["alarms"], p["alarm"]]
            if p["alarm"] == "LOW_PRESSURE":
                reading["outlet_kpa"] = round(spec.outlet_min_kpa * 0.6, 1)
        elif kind is FaultKind.CLOCK_SKEW:
            reading["ts"] = t_ms + p["skew_ms"]
        elif kind in DOCS_KINDS:
            _plant_fault(reading, spec, kind, p)
        elif kind is FaultKind.SENSOR_GLITCH:
            reading[p["field"]] = p["value"]
    return reading


def _plant_fault(reading: dict[str, Any], spec: ModelSpec, kind: FaultKind, p: dict[str, Any]) -> None:
    """A DOCS plant's own faults: one measurement out of its band, everything else healthy."""
    if kind is FaultKind.PRODUCT_FLOW_LOSS:
        reading["product_flow_lpm"] = round(spec.rated_flow_lpm * p["flow_factor"], 1)
    elif kind is FaultKind.PRODUCT_PRESSURE_LOSS and spec.product_min_kpa is not None:
        reading["product_kpa"] = round(spec.product_min_kpa * p["pressure_factor"], 1)
    elif kind is FaultKind.COMPRESSOR_OVERHEAT and spec.max_compressor_temp_c is not None:
        reading["compressor_temp_c"] = round(spec.max_compressor_temp_c + p["excess_c"], 1)
    elif kind is FaultKind.WET_AIR and spec.max_dew_point_c is not None:
        reading["dew_point_c"] = round(spec.max_dew_point_c + p["excess_c"], 1)


_ALARMS: Final = ("HIGH_PRESSURE", "LOW_PRESSURE", "NO_FLOW")
_GLITCHES: Final = (("purity_pct", 140.0), ("flow_lpm", -3.0), ("temp_c", 900.0))


def _params(  # noqa: C901 - one branch per fault kind
    kind: FaultKind, unit: UnitState, begin: int, finish: int, rng: random.Random
) -> tuple[dict[str, Any], int]:
    """The fault's parameters (the ground truth states them) and its end (a glitch is one reading)."""
    params: dict[str, Any] = {}
    if kind is FaultKind.SIEVE_WEAR:
        params = {
            "purity_base": round(unit.purity_base, 3),
            "crosses_90_ms": _crossing(unit.purity_base, begin, finish, unit.spec.purity_low_pct),
            "crosses_82_ms": _crossing(unit.purity_base, begin, finish, unit.spec.purity_critical_pct),
        }
    elif kind is FaultKind.FLOW_RESTRICTION:
        params = {"flow_factor": round(rng.uniform(0.4, 0.7), 2)}
    elif kind is FaultKind.OVERHEATING:
        params = {"excess_c": round(rng.uniform(5, 15), 1)}
    elif kind is FaultKind.DEVICE_ALARM:
        params = {"alarm": rng.choice(_ALARMS)}
    elif kind is FaultKind.CLOCK_SKEW:
        # Within the ingester's limits (5 min ahead), so skewed readings are stored, just misplaced.
        # The extra 500 ms keeps skewed readings off the unit's whole-second reporting grid, so a
        # skewed reading never lands on the timestamp of another reading and overwrites it.
        params = {"skew_ms": rng.choice([-1, 1]) * (rng.randint(30, 120) * 1000 + 500)}
    elif kind is FaultKind.PRODUCT_FLOW_LOSS:
        params = {"flow_factor": round(rng.uniform(0.3, 0.6), 2)}
    elif kind is FaultKind.PRODUCT_PRESSURE_LOSS:
        params = {"pressure_factor": round(rng.uniform(0.5, 0.8), 2)}
    elif kind is FaultKind.COMPRESSOR_OVERHEAT:
        params = {"excess_c": round(rng.uniform(5, 15), 1)}
    elif kind is FaultKind.WET_AIR:
        params = {"excess_c": round(rng.uniform(10, 30), 1)}
    elif kind is FaultKind.SENSOR_GLITCH:
        name, value = rng.choice(_GLITCHES)
        params = {"field": name, "value": value}
        finish = begin + round(unit.spec.report_interval_s * 1000)  # exactly one reading
    return params, finish


def plan_faults(
    units: Sequence[UnitState],
    start_ms: int,
    end_ms: int,
    rng: random.Random,
    *,
    share: float,
    kinds: Iterable[FaultKind] = GENERIC_KINDS,
) -> list[Fault]:
    """Schedule one fault for ``share`` of the units, cycling through ``kinds`` so each kind appears.

    Episodes start between 10 % and 45 % of the window and last 25-40 % of it, so they end inside the
    window (a network loss is uploaded before the run ends). Units and order come from ``rng``.
    """
    kinds = list(kinds)
    if not kinds or share <= 0:
        return []
    span = end_ms - start_ms
    chosen = rng.sample(list(units), k=min(len(units), max(1, round(len(units) * share))))
    faults = []
    for i, unit in enumerate(chosen):
        kind = kinds[i % len(kinds)]
        if kind in DOCS_KINDS and unit.kind != "docs":
            continue
        begin = start_ms + round(span * rng.uniform(0.10, 0.45))
        finish = begin + round(span * rng.uniform(0.25, 0.40))
        params, finish = _params(kind, unit, begin, finish, rng)
        fault = Fault(unit.unit_id, kind, begin, finish, params)
        unit.faults.append(fault)
        faults.append(fault)
    return faults
