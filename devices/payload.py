"""The payload contract between oxygen units and oxyfleet: the single source of truth.

Firmware makers get a JSON Schema generated from these models (``oxyfleet schema``) and a validator
(``oxyfleet validate-payload``). Field names carry their unit (``flow_lpm``, ``purity_pct``...), so a
value is never ambiguous on the wire or in InfluxDB.

Ranges are *physical plausibility* limits, not health thresholds: a concentrator reporting 70 % purity
is a valid reading of a failing unit (the health engine flags it), while 140 % purity or a negative flow
is a broken sensor or firmware and is rejected. The models are strict (no "5" for 5, no 1 for true)
because a firmware that sends strings today sends garbage tomorrow, and we want to tell its maker now.

Time rules need "now", so they run only when a validation context carries a :class:`TimeWindow`; the
JSON Schema and offline checks can leave it out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from devices.spec import UNIT_ID_PATTERN

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MAX_READINGS",
    "MAX_TS_MS",
    "PAYLOAD_MODELS",
    "ConcentratorReading",
    "DocsReading",
    "Reading",
    "TimeWindow",
    "fields_markdown",
    "json_schema",
]

MAX_PAYLOAD_BYTES: Final = 64 * 1024
MAX_READINGS: Final = 1000
MAX_ALARMS: Final = 16

# Epoch milliseconds below this are almost certainly epoch *seconds* (year 1973 in ms) - the most
# common firmware mistake, so it gets its own hint.
_LOOKS_LIKE_SECONDS: Final = 100_000_000_000
_MS_PER_S: Final = 1000


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """Accepted device timestamps, relative to the receiver's clock (all in epoch milliseconds)."""

    now_ms: int
    max_future_ms: int = 5 * 60 * 1000
    backfill_ms: int = 7 * 24 * 3600 * 1000


# RFC 3339 §5.6 ``date-time``, exactly: ``T`` and ``Z`` in either case (the ABNF's strings are
# case-insensitive), seconds required, any number of fraction digits, ``Z`` or a numeric offset. The ISO 8601
# forms that ``datetime.fromisoformat`` also takes (week dates, basic format, hour-only, no zone) are not
# RFC 3339, and a firmware maker should hear so before shipping them.
_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,
)
# The last millisecond of year 9999: RFC 3339 has four-digit years, and InfluxDB's int64 nanoseconds end
# in 2262 anyway, so a larger number is a broken clock or counter, not a time.
MAX_TS_MS: Final = 253_402_300_799_999


def _ts_not_rfc3339(value: str) -> PydanticCustomError:
    return PydanticCustomError(
        "ts_type",
        "ts text is not RFC 3339 date-time (e.g. 2026-11-26T07:00:00Z or 2026-11-26T14:00:00.250+07:00): {value}",
        {"value": repr(value[:64])},
    )


def _parse_rfc3339(value: str) -> int:
    """Epoch milliseconds of an RFC 3339 ``date-time`` (fraction truncated to the millisecond)."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        if _RFC3339.fullmatch(value + "Z") is not None:
            raise PydanticCustomError(
                "ts_type", "ts text needs a zone (Z or +07:00): {value}", {"value": repr(value[:64])}
            )
        raise _ts_not_rfc3339(value)
    # The pattern fixed the form; fromisoformat (C, ~0.6 µs) checks the ranges (2026-02-30, 24:00, +24:00).
    if value[-3] == ":" and value[-2:] > "59":  # fromisoformat reads +07:60 as +08:00
        raise PydanticCustomError(
            "ts_type", "ts text has an offset beyond 59 minutes: {value}", {"value": repr(value[:64])}
        )
    leap = value[17:19] == "60"  # 23:59:60, a leap second: counted as the next second
    text = value.upper() if leap or value[10] == "t" or value[-1] == "z" else value
    if leap:
        text = text[:17] + "59" + text[19:]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise PydanticCustomError(
            "ts_type",
            "ts text is not a real date and time ({error}): {value}",
            {"error": str(exc), "value": repr(value[:64])},
        ) from None
    seconds = moment.timestamp()
    if seconds < 0:
        raise PydanticCustomError(
            "ts_type", "ts must not be before 1970: {value}", {"value": repr(value[:64])}
        )
    # Whole seconds and microseconds separately: seconds * 1000 as a float would turn .123 into 122.99...
    return (int(seconds) + leap) * _MS_PER_S + moment.microsecond // 1000


def _beyond_9999() -> PydanticCustomError:
    return PydanticCustomError(
        "ts_range", "ts is beyond year 9999 (epoch milliseconds at most {limit})", {"limit": MAX_TS_MS}
    )


def _float_ts(value: float) -> int:
    """``1795998878298.0`` as some JSON encoders write every number; a fraction of a millisecond is refused."""
    if not math.isfinite(value):
        # Only a JSON number too large for a double gets here: NaN/Infinity literals are refused with the
        # whole document (not JSON), so this is a range problem like 1e30.
        raise PydanticCustomError("ts_range", "ts is far beyond year 9999 (got {value})", {"value": value})
    if value > MAX_TS_MS:
        raise _beyond_9999()
    if not value.is_integer():
        raise PydanticCustomError(
            "ts_type",
            "ts must be whole epoch milliseconds; {value} has a fraction of a millisecond",
            {"value": value},
        )
    return int(value)


def _parse_ts(value: object) -> int:
    """Turn the wire forms of ``ts`` into epoch milliseconds, with a message a firmware maker can act on."""
    if type(value) is int and 0 <= value <= MAX_TS_MS:  # the common case first: once per reading
        return value
    if type(value) is str:
        return _parse_rfc3339(value)
    if type(value) is float:
        value = _float_ts(value)
    if type(value) is int:  # not bool: true is no time
        if value < 0:
            raise PydanticCustomError("ts_type", "ts must not be negative")
        if value > MAX_TS_MS:
            raise _beyond_9999()
        return value
    raise PydanticCustomError("ts_type", "ts must be epoch milliseconds (integer) or RFC 3339 text")


def _check_window(ts_ms: int, info: ValidationInfo) -> int:
    window = info.context.get("window") if isinstance(info.context, dict) else None
    if not isinstance(window, TimeWindow):
        return ts_ms
    if ts_ms > window.now_ms + window.max_future_ms:
        hint = " (it looks like epoch seconds; send milliseconds)" if ts_ms < _LOOKS_LIKE_SECONDS else ""
        raise PydanticCustomError(
            "ts_future",
            "ts is {ahead_s} s ahead of the receiver's clock (limit {limit_s} s){hint}",
            {
                "ahead_s": (ts_ms - window.now_ms) // _MS_PER_S,
                "limit_s": window.max_future_ms // _MS_PER_S,
                "hint": hint,
            },
        )
    if ts_ms < window.now_ms - window.backfill_ms:
        hint = " (it looks like epoch seconds; send milliseconds)" if ts_ms < _LOOKS_LIKE_SECONDS else ""
        raise PydanticCustomError(
            "ts_too_old",
            "ts is older than the backfill window of {limit_h} h{hint}",
            {"limit_h": window.backfill_ms // 3_600_000, "hint": hint},
        )
    return ts_ms


Timestamp = Annotated[
    int,
    BeforeValidator(_parse_ts),
    AfterValidator(_check_window),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_TS_MS,
                    "description": "epoch milliseconds (a whole number; 1764140400000.0 is accepted too)",
                },
                {
                    "type": "string",
                    "format": "date-time",
                    "pattern": _RFC3339.pattern.join("^$"),
                    "description": "RFC 3339 date-time with zone (T/Z in either case)",
                },
            ],
            "description": "When the reading was taken, by the device's clock. At most 5 minutes ahead of the "
            "receiver and not older than the backfill window (7 days by default).",
        }
    ),
]

AlarmCode = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{1,31}$")]
UnitId = Annotated[str, StringConstraints(pattern=UNIT_ID_PATTERN)]


def _measure(lo: float, hi: float, description: str) -> Any:  # noqa: ANN401 - pydantic's FieldInfo
    return Field(default=None, ge=lo, le=hi, description=description)


_MEASUREMENT_FIELDS: dict[type, tuple[str, ...]] = {}


class _ReadingBase(BaseModel):
    """Fields every oxygen unit reports. Everything but ``ts`` is optional; one measurement is required."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, allow_inf_nan=False)

    # Fields that identify or order a reading rather than measure something.
    IDENTITY_FIELDS: ClassVar[frozenset[str]] = frozenset({"ts", "seq", "unit_id"})

    ts: Timestamp
    seq: int | None = Field(
        default=None, ge=0, le=2**63 - 1, description="Per-device counter; gaps reveal loss."
    )
    unit_id: UnitId | None = Field(
        default=None, description="Must equal the unit id in the topic when present (anti-spoofing)."
    )
    purity_pct: float | None = _measure(0, 100, "Oxygen concentration at the outlet, percent.")
    temp_c: float | None = _measure(-40, 150, "Internal temperature, degrees Celsius.")
    run_hours: float | None = _measure(0, 1_000_000, "Compressor run hours since manufacture.")
    power: Literal["mains", "battery", "none"] | None = Field(default=None, description="Power source.")
    running: bool | None = Field(
        default=None, description="false when the unit reports standby (switched off)."
    )
    alarms: list[AlarmCode] | None = Field(
        default=None,
        max_length=MAX_ALARMS,
        description="Active device alarm codes, e.g. LOW_PURITY, NO_FLOW, POWER_FAILURE, HIGH_TEMP.",
    )

    @model_validator(mode="after")
    def _has_measurement(self) -> _ReadingBase:
        for name in self.measurement_fields():
            if getattr(self, name) is not None:
                return self
        raise PydanticCustomError(
            "no_measurement",
            "a reading needs at least one measurement (e.g. purity_pct, flow_lpm, running)",
        )

    @classmethod
    def measurement_fields(cls) -> tuple[str, ...]:
        """Fields that carry a measured value, in declaration order (also the line-protocol field order).

        Cached per class: it runs for every reading (twice), and pydantic's ``model_fields`` is a
        descriptor that rebuilds its answer on each access (15 % of the ingester's decoding time before).
        """
        fields = _MEASUREMENT_FIELDS.get(cls)
        if fields is None:
            fields = _MEASUREMENT_FIELDS[cls] = tuple(
                name for name in cls.model_fields if name not in cls.IDENTITY_FIELDS
            )
        return fields


class ConcentratorReading(_ReadingBase):
    """A reading from an oxygen concentrator (5 or 10 L/min class bedside units)."""

    flow_lpm: float | None = _measure(0, 25, "Delivered flow, litres per minute.")
    setpoint_lpm: float | None = _measure(0, 25, "Flow the unit is set to deliver, litres per minute.")
    outlet_kpa: float | None = _measure(0, 600, "Outlet pressure, kPa (gauge).")


class DocsReading(_ReadingBase):
    """A reading from a deployable oxygen concentrator system (containerised PSA plant)."""

    flow_lpm: float | None = _measure(0, 10_000, "Oxygen delivered to the distribution line, L/min.")
    setpoint_lpm: float | None = _measure(0, 10_000, "Demanded flow, L/min.")
    product_flow_lpm: float | None = _measure(0, 10_000, "Oxygen produced by the PSA beds, L/min.")
    outlet_kpa: float | None = _measure(0, 1500, "Distribution line pressure, kPa (gauge).")
    product_kpa: float | None = _measure(0, 1500, "Product line pressure after the beds, kPa (gauge).")
    tank_kpa: float | None = _measure(0, 1500, "Buffer tank pressure, kPa (gauge).")
    feed_kpa: float | None = _measure(0, 1500, "Compressed-air feed pressure, kPa (gauge).")
    dew_point_c: float | None = _measure(-100, 50, "Feed-air dew point, degrees Celsius.")
    compressor_temp_c: float | None = _measure(-40, 200, "Compressor discharge temperature, degrees Celsius.")


Reading = ConcentratorReading | DocsReading

PAYLOAD_MODELS: Final[dict[str, type[ConcentratorReading | DocsReading]]] = {
    "concentrator": ConcentratorReading,
    "docs": DocsReading,
}


def _describe(prop: dict[str, Any]) -> tuple[str, str]:
    """(type, accepted values) of one JSON Schema property, in words a firmware maker reads."""
    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    kinds, limits = [], []
    for o in options:
        if "enum" in o:
            kinds.append("string")
            limits.append("one of " + ", ".join(f"`{v}`" for v in o["enum"]))
        elif o.get("type") == "array":
            item = o.get("items", {})
            kinds.append("array of strings")
            limits.append(f"at most {o.get('maxItems')} codes matching `{item.get('pattern')}`")
        else:
            kinds.append(o.get("type", "?"))
            if "pattern" in o:
                limits.append(f"matches `{o['pattern']}`")
            if "minimum" in o and "maximum" in o and o["maximum"] < 2**62:
                limits.append(f"{o['minimum']:g} to {o['maximum']:g}")
            elif "minimum" in o:
                limits.append(f">= {o['minimum']:g}")
    return " or ".join(kinds), "; ".join(limits)


def fields_markdown() -> str:
    """The payload fields as a Markdown table per kind, for docs/payload-contract.md (generated, not typed)."""
    out = []
    for kind, model in PAYLOAD_MODELS.items():
        props = model.model_json_schema()["properties"]
        required = set(model.model_json_schema().get("required", []))
        out += [
            f"**{kind}** (`oxygen/{kind}/{{unit_id}}/telemetry`)",
            "",
            "| field | type | accepted | meaning |",
            "|---|---|---|---|",
        ]
        for name, prop in props.items():
            kind_text, accepted = _describe(prop)
            meaning = prop.get("description", "")
            if name in required:
                meaning = "**Required.** " + meaning
            out.append(f"| `{name}` | {kind_text} | {accepted} | {meaning} |")
        out.append("")
    return "\n".join(out)


def json_schema(kind: str) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of everything a unit of ``kind`` may publish on its telemetry topic.

    A payload is one reading or ``{"readings": [...]}``. The ingester validates each element of a batch
    on its own, so one bad reading in a batch of 1,000 is rejected alone instead of taking 999 good ones
    with it.
    """
    model = PAYLOAD_MODELS[kind]
    reading = model.model_json_schema(ref_template="#/$defs/{model}")
    defs = reading.pop("$defs", {})
    defs[model.__name__] = reading
    ref = {"$ref": f"#/$defs/{model.__name__}"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://oxyfleet.example/schema/{kind}-telemetry.json",
        "title": f"oxyfleet {kind} telemetry payload",
        "description": f"Published to oxygen/{kind}/{{unit_id}}/telemetry as UTF-8 JSON of at most "
        f"{MAX_PAYLOAD_BYTES} bytes. Unknown fields are ignored (and counted). NaN and Infinity are rejected.",
        "oneOf": [
            ref,
            {
                "type": "object",
                "properties": {
                    "readings": {"type": "array", "items": ref, "minItems": 1, "maxItems": MAX_READINGS}
                },
                "required": ["readings"],
                "additionalProperties": False,
            },
        ],
        "$defs": defs,
    }
