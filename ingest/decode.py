"""Turn one MQTT message (topic + bytes) into validated readings and/or rejections. Pure: no I/O.

Every message ends here as readings to write, rejections to record, or both (a late-upload batch with
one bad reading among 999 good ones: the 999 are written, the bad one is rejected on its own). Nothing
raises out of :meth:`Decoder.decode`, whatever the bytes are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from devices.payload import MAX_PAYLOAD_BYTES, MAX_READINGS, PAYLOAD_MODELS, TimeWindow
from devices.spec import KINDS, UNIT_ID_RE
from ingest import jsondoc

if TYPE_CHECKING:
    from devices.payload import Reading

__all__ = [
    "ConnectionChange",
    "Decoded",
    "Decoder",
    "Inbound",
    "Reason",
    "Rejection",
    "TopicParts",
    "ValidReading",
    "parse_topic",
]

_NS_PER_MS: Final = 1_000_000
_MAX_DETAIL: Final = 600
_LONG_INT: Final = 10**30  # shown as "a 400-digit number", not as its first digits


class Reason(StrEnum):
    """Why a message (or one reading of a batch) was rejected. A fixed set: it is a tag in InfluxDB."""

    BAD_TOPIC = "bad_topic"  # not oxygen/{kind}/{unit_id}/{telemetry|status}, or a bad unit id
    TOO_LARGE = "too_large"  # payload above the size limit (64 KiB)
    NOT_JSON = "not_json"  # not UTF-8 JSON
    DUPLICATE_KEY = "duplicate_key"  # an object repeats a name: which value is meant is ambiguous
    SCHEMA_INVALID = "schema_invalid"  # wrong shape, wrong types, missing ts, no measurement
    OUT_OF_RANGE = (
        "out_of_range"  # number outside its field's range, however written (1e30, 1e400, 400 digits)
    )
    NOT_FINITE = "not_finite"  # NaN or Infinity anywhere in the document (not JSON)
    TS_FUTURE = "ts_future"  # timestamp too far ahead of the receiver's clock
    TS_TOO_OLD = "ts_too_old"  # timestamp older than the backfill window
    UNIT_MISMATCH = "unit_mismatch"  # payload unit_id differs from the topic's (spoofing or misconfiguration)
    TOO_MANY_READINGS = "too_many_readings"  # batch larger than the limit (1,000)
    SINK_REJECTED = "sink_rejected"  # InfluxDB refused the point (e.g. field type conflict)


@dataclass(slots=True)
class Inbound:
    """A message as the source hands it over; ``ack_token`` lets the source acknowledge it later."""

    topic: str
    payload: bytes
    received_ns: int
    qos: int = 0
    retain: bool = False
    ack_token: Any = None
    # The size on the wire when ``payload`` is only the first bytes of an oversize message: the source
    # keeps no more than the rejected record stores, so a burst of huge messages costs no memory.
    size: int | None = None


@dataclass(frozen=True, slots=True)
class TopicParts:
    """The meaning of a valid device topic."""

    kind: str
    unit_id: str
    channel: str


@dataclass(frozen=True, slots=True)
class ValidReading:
    """A reading that passed validation, with the identity taken from its topic."""

    kind: str
    unit_id: str
    reading: Reading


@dataclass(frozen=True, slots=True)
class ConnectionChange:
    """A device's MQTT will / birth message: it went offline or came back."""

    kind: str
    unit_id: str
    online: bool
    received_ns: int


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message, or one reading in a batch, cannot be stored as telemetry; stored in ``rejected``."""

    reason: Reason
    detail: str
    topic: str
    payload: bytes
    received_ns: int
    unit_id: str | None = None
    size: int | None = None  # of the payload on the wire, when ``payload`` is only its first bytes


@dataclass(slots=True)
class Decoded:
    """What one message became."""

    readings: list[ValidReading] = field(default_factory=list)
    connections: list[ConnectionChange] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    unknown_fields: int = 0


def parse_topic(topic: str, prefix: str) -> TopicParts | str:
    """Return the topic's parts, or a message saying what is wrong with it.

    Valid topics repeat (one per unit and channel), so their parts are remembered; a bounded cache, so
    a flood of random topics cannot grow it.
    """
    key = (topic, prefix)
    parts = _TOPIC_CACHE.get(key)
    if parts is not None:
        return parts
    result = _parse_topic(topic, prefix)
    if not isinstance(result, str):
        if len(_TOPIC_CACHE) >= _TOPIC_CACHE_MAX:
            _TOPIC_CACHE.clear()
        _TOPIC_CACHE[key] = result
    return result


_TOPIC_CACHE: dict[tuple[str, str], TopicParts] = {}
_TOPIC_CACHE_MAX: Final = 200_000


def _parse_topic(topic: str, prefix: str) -> TopicParts | str:
    head = prefix + "/"
    if not topic.startswith(head):
        return f"topic must start with {head!r}"
    parts = topic[len(head) :].split("/")
    if len(parts) != 3:
        return f"topic must be {prefix}/{{kind}}/{{unit_id}}/{{telemetry|status}}"
    kind, unit_id, channel = parts
    if kind not in KINDS:
        return f"unknown kind {kind[:40]!r}; expected one of {', '.join(KINDS)}"
    if not UNIT_ID_RE.fullmatch(unit_id):
        return "unit id in topic must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
    if channel not in ("telemetry", "status"):
        return f"unknown channel {channel[:40]!r}; expected telemetry or status"
    return TopicParts(kind, unit_id, channel)


# Pydantic error types that mean "a number outside its physical range" or "not a finite number".
_RANGE_TYPES: Final = frozenset({"greater_than_equal", "less_than_equal", "greater_than", "less_than"})
_REASON_BY_TYPE: Final = {
    # NaN/Infinity literals are refused with the whole document before validation, so a non-finite
    # float here is a JSON number too large for a double (1e400): a range problem, like 1e30.
    "finite_number": Reason.OUT_OF_RANGE,
    "ts_range": Reason.OUT_OF_RANGE,
    "ts_future": Reason.TS_FUTURE,
    "ts_too_old": Reason.TS_TOO_OLD,
    **dict.fromkeys(_RANGE_TYPES, Reason.OUT_OF_RANGE),
}
# When several errors occur, the most fundamental wins: a wrong shape hides everything else.
_PRECEDENCE: Final = (
    Reason.SCHEMA_INVALID,
    Reason.OUT_OF_RANGE,
    Reason.TS_FUTURE,
    Reason.TS_TOO_OLD,
)


def explain(error: ValidationError, where: str = "") -> tuple[Reason, str]:
    """Map a pydantic error to one reason code and a detail a firmware maker can act on."""
    reasons: set[Reason] = set()
    parts: list[str] = []
    for err in error.errors(include_url=False):
        reason = _REASON_BY_TYPE.get(err["type"], Reason.SCHEMA_INVALID)
        msg = err["msg"]
        shown = err.get("input")
        if err["type"] == "float_type" and type(shown) is int:
            # A JSON integer longer than any double (a 400-digit number): too large, not the wrong type.
            reason = Reason.OUT_OF_RANGE
            msg = f"number too large ({len(str(abs(shown)))} digits)"
            shown = None
        elif err["type"] == "finite_number":
            msg = "number too large for a double"
            shown = None
        elif type(shown) is int and abs(shown) >= _LONG_INT:
            msg = f"{msg} (got a {len(str(abs(shown)))}-digit number)"
            shown = None
        reasons.add(reason)
        loc = ".".join(str(p) for p in err["loc"])
        name = f"{where}{loc}" if loc else (where.rstrip(".") or "payload")
        got = (
            f" (got {shown!r:.40})"
            if isinstance(shown, int | float | str)
            and err["type"] != "missing"
            and not err["type"].startswith("ts_")
            else ""
        )
        parts.append(f"{name}: {msg}{got}")
    reason = next(r for r in _PRECEDENCE if r in reasons)
    return reason, _clip("; ".join(parts))


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


class Decoder:
    """Validates messages against the payload contract; one instance per ingester, shared by no threads."""

    def __init__(
        self,
        prefix: str = "oxygen",
        *,
        max_bytes: int = MAX_PAYLOAD_BYTES,
        max_readings: int = MAX_READINGS,
        max_future_ms: int = 5 * 60 * 1000,
        backfill_ms: int = 7 * 24 * 3600 * 1000,
        check_time: bool = True,
    ) -> None:
        self.prefix = prefix
        self.max_bytes = max_bytes
        self.max_readings = max_readings
        self.max_future_ms = max_future_ms
        self.backfill_ms = backfill_ms
        self.check_time = check_time

    def decode(self, msg: Inbound) -> Decoded:  # noqa: C901, PLR0911 - one flat list of checks reads best
        """Decode one message. Never raises for any topic or payload."""
        out = Decoded()

        def reject(reason: Reason, detail: str, unit_id: str | None = None) -> Decoded:
            out.rejections.append(
                Rejection(reason, _clip(detail), msg.topic, msg.payload, msg.received_ns, unit_id, msg.size)
            )
            return out

        parts = parse_topic(msg.topic, self.prefix)
        if isinstance(parts, str):
            return reject(Reason.BAD_TOPIC, parts)
        size = len(msg.payload) if msg.size is None else msg.size
        if size > self.max_bytes:
            return reject(Reason.TOO_LARGE, f"payload is {size} bytes; limit {self.max_bytes}", parts.unit_id)
        if parts.channel == "status":
            text = msg.payload.strip()
            if text not in (b"online", b"offline"):
                return reject(
                    Reason.SCHEMA_INVALID, "status payload must be 'online' or 'offline'", parts.unit_id
                )
            out.connections.append(
                ConnectionChange(parts.kind, parts.unit_id, text == b"online", msg.received_ns)
            )
            return out
        try:
            # Refused whole, anywhere in the document (unknown fields too): NaN/Infinity, repeated names.
            data = jsondoc.load(msg.payload)
        except jsondoc.DocumentError as exc:
            return reject(Reason(exc.problem), exc.detail, parts.unit_id)
        if not isinstance(data, dict):
            return reject(
                Reason.SCHEMA_INVALID,
                f"payload must be a JSON object, not {type(data).__name__}",
                parts.unit_id,
            )
        if "readings" in data:
            readings = data["readings"]
            if not isinstance(readings, list) or not readings:
                return reject(
                    Reason.SCHEMA_INVALID, "readings must be a non-empty array of readings", parts.unit_id
                )
            if len(readings) > self.max_readings:
                return reject(
                    Reason.TOO_MANY_READINGS,
                    f"batch has {len(readings)} readings; limit {self.max_readings}",
                    parts.unit_id,
                )
            if len(data) > 1:
                out.unknown_fields += len(data) - 1
            for i, item in enumerate(readings):
                self._one(item, parts, msg, out, f"readings[{i}].")
        else:
            self._one(data, parts, msg, out, "")
        return out

    def _one(self, item: object, parts: TopicParts, msg: Inbound, out: Decoded, where: str) -> None:
        def reject(reason: Reason, detail: str) -> None:
            # A rejected reading of a batch keeps only its own JSON, so the record shows what was wrong.
            raw = msg.payload if not where else _reading_bytes(item)
            out.rejections.append(
                Rejection(reason, _clip(detail), msg.topic, raw, msg.received_ns, parts.unit_id)
            )

        if not isinstance(item, dict):
            reject(Reason.SCHEMA_INVALID, f"{where or 'payload'} must be a JSON object")
            return
        claimed = item.get("unit_id")
        if isinstance(claimed, str) and claimed != parts.unit_id:
            reject(
                Reason.UNIT_MISMATCH,
                f"{where}unit_id {claimed[:64]!r} differs from the topic's unit {parts.unit_id!r}",
            )
            return
        model = PAYLOAD_MODELS[parts.kind]
        context = None
        if self.check_time:
            window = TimeWindow(msg.received_ns // _NS_PER_MS, self.max_future_ms, self.backfill_ms)
            context = {"window": window}
        try:
            reading = model.model_validate(item, context=context)
        except ValidationError as exc:
            reject(*explain(exc, where))
            return
        # Every key pydantic took is in model_fields_set (no aliases, duplicates refused by jsondoc), so
        # the rest are unknown: no set difference per reading (a twentieth of the ingester's CPU, py-spy).
        out.unknown_fields += len(item) - len(reading.model_fields_set)
        out.readings.append(ValidReading(parts.kind, parts.unit_id, reading))


def _reading_bytes(item: object) -> bytes:
    import json  # noqa: PLC0415 - only on the rare path of a rejected batch element

    try:
        return json.dumps(item, allow_nan=True, separators=(",", ":")).encode()[:4096]
    except (TypeError, ValueError):
        return repr(item).encode()[:4096]
