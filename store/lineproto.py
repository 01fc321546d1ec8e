r"""InfluxDB line protocol for everything oxyfleet stores. Pure: no I/O.

The builder takes the ingester's message types through the protocols below (structural types), so the
storage layer never imports the ingester.

Escaping follows the line-protocol reference: measurement names escape comma and space; tag keys and
values escape comma, equals sign and space; string field values escape backslash and double quote.
Newlines cannot be escaped in line protocol at all (a raw newline ends the line, which is how an
injected point would get in), so any CR/LF in a string is written as the two characters ``\\n``/``\\r``.
Unit ids never need escaping because the topic grammar already refused anything outside
``[A-Za-z0-9_.-]``; the escaping is there for inventory text and for rejected payloads.

Telemetry points carry the device's timestamp (``ts`` in ms), so a redelivered message writes the same
series+time again and overwrites itself instead of counting twice; their tags are the inventory's as it
stood at that time (:meth:`TagLookup.__call__`), so an inventory edit between write and ack does not
move the copy to another series. Records without a device time (``rejected``, ``late_data``,
``unit_connection``) get a time derived from the message instead of the receive clock alone
(:func:`message_ns`), so that a redelivery overwrites its own point too. All writes use nanosecond
precision.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Protocol

from store.schema import (
    LATE_MARKER_WINDOW_MS,
    UNIT_TAGS,
    UNREGISTERED,
    ConnectionField,
    LateField,
    Measurement,
    RejectedField,
    Tag,
    TelemetryField,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from enum import StrEnum

    from devices.payload import Reading

__all__ = [
    "LineBuilder",
    "StaticTags",
    "TagLookup",
    "UnitTags",
    "escape_field_string",
    "escape_tag",
    "field_value",
    "line",
    "tag_set",
]

_NS_PER_MS: Final = 1_000_000
# Plain str copies for the per-reading path (formatting an enum member costs a method call).
_SEQ: Final = str(TelemetryField.SEQ)
_ALARM_COUNT: Final = str(TelemetryField.ALARM_COUNT)
# Records without a device time are placed in the minute they were received (issue 19). A redelivery
# within that minute - the usual case: a restart takes seconds - overwrites the first copy; one that
# arrives in a later minute adds one point. The receive time itself stays in a field where it matters.
KEY_WINDOW_NS: Final = LATE_MARKER_WINDOW_MS * 1_000_000  # one minute, the window the health engine widens by
MAX_STORED_PAYLOAD: Final = 1024

_TAG_ESCAPES: Final = str.maketrans(
    {
        "\\": "\\\\",
        ",": "\\,",
        "=": "\\=",
        " ": "\\ ",
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
    }
)
_STR_ESCAPES: Final = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


def escape_tag(value: str) -> str:
    """Escape a tag key or value (also used for measurement names, which need a subset)."""
    return value.translate(_TAG_ESCAPES)


def escape_field_string(value: str) -> str:
    """Escape a string field value (without the surrounding quotes)."""
    return value.translate(_STR_ESCAPES)


def field_value(value: object) -> str:
    """A field value in line protocol: bool, integer (``i``), float or escaped string."""
    # bool before int: bool is an int in Python.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return f'"{escape_field_string(str(value))}"'


def tag_set(tags: Mapping[str, str]) -> str:
    """``k=v,...`` sorted by key (the order InfluxDB stores), empty values left out."""
    return ",".join(f"{escape_tag(k)}={escape_tag(v)}" for k, v in sorted(tags.items()) if v)


def field_set(fields: Mapping[str, object]) -> str:
    """The fields of a point, ``k=v,...`` escaped (None values left out): what :func:`line` puts after the tags.

    Callers writing many points with the same fields (the health engine's minutes) cache it.
    """
    return ",".join(f"{escape_tag(k)}={field_value(v)}" for k, v in fields.items() if v is not None)


def line(measurement: str, tags: str, fields: Mapping[str, object], ts_ns: int) -> str:
    """One point; ``tags`` is a ready :func:`tag_set` (callers cache it per series), fields are escaped here."""
    head = f"{escape_tag(measurement)},{tags}" if tags else escape_tag(measurement)
    return f"{head} {field_set(fields)} {ts_ns}"


class ValidReading(Protocol):
    """A validated reading with its identity (the ingester's ``ingest.decode.ValidReading``)."""

    @property
    def kind(self) -> str: ...
    @property
    def unit_id(self) -> str: ...
    @property
    def reading(self) -> Reading: ...


class ConnectionChange(Protocol):
    """A device went online/offline (the ingester's ``ingest.decode.ConnectionChange``)."""

    @property
    def kind(self) -> str: ...
    @property
    def unit_id(self) -> str: ...
    @property
    def online(self) -> bool: ...
    @property
    def received_ns(self) -> int: ...


class Rejection(Protocol):
    """A refused message (the ingester's ``ingest.decode.Rejection``); ``reason`` is its code."""

    @property
    def reason(self) -> StrEnum: ...
    @property
    def detail(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def payload(self) -> bytes: ...
    @property
    def received_ns(self) -> int: ...
    @property
    def unit_id(self) -> str | None: ...
    @property
    def size(self) -> int | None:
        """The payload's size when ``payload`` holds only its first bytes (an oversize message)."""
        ...


@dataclass(frozen=True, slots=True)
class UnitTags:
    """Inventory facts stored as tags on every point of a unit."""

    hospital: str = UNREGISTERED
    model: str = UNREGISTERED
    province: str = UNREGISTERED


class TagLookup(Protocol):
    """Where the inventory plugs in: unit id -> tags. Must be cheap; it is called once per point."""

    unregistered: int  # points tagged as unregistered so far

    def __call__(self, unit_id: str, at_ms: int | None = None) -> UnitTags:
        """Tags of ``unit_id`` in force at ``at_ms`` (epoch ms; now when None); defaults when unknown."""
        ...

    def refresh(self) -> None:
        """Pick up changes of the underlying inventory; called between batches."""
        ...


class StaticTags:
    """A fixed mapping (or nothing at all: every unit is ``unregistered``)."""

    def __init__(self, units: Mapping[str, UnitTags] | None = None) -> None:
        self._units = dict(units or {})
        self._default = UnitTags()
        self.unregistered = 0

    def __call__(self, unit_id: str, at_ms: int | None = None) -> UnitTags:  # noqa: ARG002 - no history
        """Tags for ``unit_id``."""
        tags = self._units.get(unit_id)
        if tags is None:
            self.unregistered += 1
            return self._default
        return tags

    def refresh(self) -> None:
        """Nothing to reload."""


def message_ns(received_ns: int, *parts: str | bytes) -> int:
    """A point time inside the minute of ``received_ns``, the same for every delivery of one message.

    The offset inside the minute is a hash of ``parts`` (topic, payload, and what else tells records of
    one message apart), so distinct records of a minute do not collide and a repeat of one overwrites it.
    """
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part)
        digest.update(b"\x00")
    return received_ns - received_ns % KEY_WINDOW_NS + int.from_bytes(digest.digest()) % KEY_WINDOW_NS


class LineBuilder:
    """Builds lines; keeps a per-instance clock so records without a device time never share a timestamp."""

    def __init__(self, tags: TagLookup | None = None, instance: str = "ingest") -> None:
        self.tags: TagLookup = tags or StaticTags()
        self.instance_tag = escape_tag(instance) or "ingest"
        self._last_ns = 0
        self._tag_cache: dict[tuple[str, str, UnitTags], str] = {}

    def unique_ns(self, wanted_ns: int) -> int:
        """A timestamp >= wanted and > any this builder handed out before."""
        self._last_ns = max(wanted_ns, self._last_ns + 1)
        return self._last_ns

    def _series(self, measurement: str, kind: str, unit_id: str, at_ms: int | None = None) -> str:
        # Tags as the inventory stood at the point's time, so a redelivery after a move writes the same
        # series again (one point per reading) instead of a copy under the new hospital (issue 19).
        unit = self.tags(unit_id, at_ms)
        key = (kind, unit_id, unit)
        series = self._tag_cache.get(key)
        if series is None:
            # Sorted tag keys are what InfluxDB stores anyway; sending them sorted saves it the work.
            series = tag_set(
                dict(zip(UNIT_TAGS, (unit.hospital, kind, unit.model, unit.province, unit_id), strict=True))
            )
            if len(self._tag_cache) > 100_000:
                self._tag_cache.clear()
            self._tag_cache[key] = series
        return f"{measurement},{series}"

    def telemetry(self, item: ValidReading) -> str:
        """One telemetry point at the device's timestamp.

        The hottest function of the ingester: values are read from the model's ``__dict__`` and dispatched
        on their exact type (halved its cost against ``getattr`` plus ``isinstance`` per field).
        """
        reading = item.reading
        values = reading.__dict__
        fields: list[str] = []
        for name in reading.measurement_fields():
            value = values[name]
            if value is None:
                continue
            kind = type(value)
            if kind is float:
                fields.append(f"{name}={value!r}")
            elif kind is bool:
                fields.append(f"{name}=true" if value else f"{name}=false")
            elif kind is int:
                # Always float: a firmware sending 5 then 5.2 must not cause a field type conflict.
                fields.append(f"{name}={float(value)!r}")
            elif kind is str:
                fields.append(f'{name}="{escape_field_string(value)}"')
            elif name == "alarms":
                fields.append(f'{name}="{escape_field_string(",".join(value))}"')
                fields.append(f"{_ALARM_COUNT}={len(value)}i")
            else:
                fields.append(f"{name}={field_value(value)}")
        if reading.seq is not None:
            fields.append(f"{_SEQ}={reading.seq}i")
        return (
            f"{self._series(Measurement.TELEMETRY, item.kind, item.unit_id, reading.ts)} {','.join(fields)} "
            f"{reading.ts * _NS_PER_MS}"
        )

    def late_data(
        self, kind: str, unit_id: str, from_ms: int, to_ms: int, count: int, received_ns: int
    ) -> str:
        """Marks a late upload: readings of ``unit_id`` from ``from_ms`` to ``to_ms`` arrived just now.

        The pipeline writes one per unit per batch at most. Its time is in the minute of arrival (the
        health engine looks for markers by arrival, widened by LATE_MARKER_WINDOW_MS) at an offset
        derived from the readings, not from the clock: the unit and its earliest late reading. A
        redelivery in the same minute writes the same point again (issues 16, 19).
        """
        ts = message_ns(received_ns, kind, unit_id, str(from_ms))
        return (
            f"{self._series(Measurement.LATE_DATA, kind, unit_id, to_ms)} {LateField.FROM_MS}={from_ms}i,"
            f"{LateField.TO_MS}={to_ms}i,{LateField.COUNT}={count}i {ts}"
        )

    def connection(self, change: ConnectionChange) -> str:
        """A device went online/offline (its MQTT will): one point per unit, minute and reported state.

        Status messages carry no time, so the point is keyed by the minute of arrival and the state:
        ``offline`` at the minute's start, ``online`` 1 ms after it. A redelivery in the same minute
        overwrites its own point, and a link that dropped and came back within one minute keeps both
        (a technician must see the drop); their order inside that minute is not kept, and a minute with
        both reads as ``online`` last.
        """
        online = "true" if change.online else "false"
        ts = change.received_ns - change.received_ns % KEY_WINDOW_NS + (_NS_PER_MS if change.online else 0)
        series = self._series(Measurement.UNIT_CONNECTION, change.kind, change.unit_id, ts // _NS_PER_MS)
        return f"{series} {ConnectionField.ONLINE}={online} {ts}"

    def rejected(self, rej: Rejection) -> str:
        """The dead-letter record: reason as tag, everything needed to debug the device as fields."""
        shown = rej.payload[:MAX_STORED_PAYLOAD].decode("utf-8", "backslashreplace")
        received = datetime.fromtimestamp(rej.received_ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")
        fields = [
            f'{RejectedField.DETAIL}="{escape_field_string(rej.detail)}"',
            f'{RejectedField.PAYLOAD}="{escape_field_string(shown)}"',
            f"{RejectedField.PAYLOAD_BYTES}={len(rej.payload) if rej.size is None else rej.size}i",
            f'{RejectedField.RECEIVED_AT}="{received}"',
            f'{RejectedField.TOPIC}="{escape_field_string(rej.topic[:512])}"',
        ]
        if rej.unit_id:
            fields.append(f'{RejectedField.UNIT_ID}="{escape_field_string(rej.unit_id)}"')
        # Keyed by the message and the reason for it (one message may hold several bad readings).
        ts = message_ns(rej.received_ns, rej.topic, rej.payload, rej.reason.value, rej.detail)
        return (
            f"{Measurement.REJECTED},{Tag.INSTANCE}={self.instance_tag},{Tag.REASON}={rej.reason.value} "
            f"{','.join(fields)} {ts}"
        )

    def stats(self, counters: Mapping[str, int | float], at_ns: int | None = None) -> str:
        """The ingester's own counters as one point."""
        fields = ",".join(f"{k}={field_value(v)}" for k, v in sorted(counters.items()))
        ts = self.unique_ns(at_ns if at_ns is not None else time.time_ns())
        return f"{Measurement.STATS},{Tag.INSTANCE}={self.instance_tag} {fields} {ts}"
