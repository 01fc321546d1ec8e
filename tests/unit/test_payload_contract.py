"""The payload contract's rules as properties (docs/payload-contract.md), beside the golden cases.

Hypothesis with a fixed budget, derandomized, so CI is reproducible: strict RFC 3339 timestamps (every
valid form gives the exact instant, the ISO 8601 forms that are not RFC 3339 are refused), NaN/Infinity
refused anywhere in a document, repeated names refused anywhere (and never claimed where there are none:
the cheap byte-level check must not miss one nor invent one), and one reason per kind of number problem.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.payload import MAX_TS_MS
from ingest.decode import Decoder, Inbound, Reason

NOW_MS = 1764140400000
TOPIC = "oxygen/concentrator/UNIT-1/telemetry"
BUDGET = settings(
    max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def decode(payload: bytes | str) -> tuple[list[int], list[Reason]]:
    raw = payload.encode() if isinstance(payload, str) else payload
    out = Decoder().decode(Inbound(TOPIC, raw, NOW_MS * 1_000_000))
    return [r.reading.ts for r in out.readings], [r.reason for r in out.rejections]


# --- RFC 3339 ---------------------------------------------------------------------------------------

WINDOW = st.datetimes(
    # Naive bounds (hypothesis wants them so), read as UTC: inside the 7-day backfill window.
    min_value=datetime(2025, 11, 19, 8, 0),  # noqa: DTZ001
    max_value=datetime(2025, 11, 26, 7, 4),  # noqa: DTZ001
)
OFFSET_MIN = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59)


@BUDGET
@given(
    moment=WINDOW,
    offset_min=OFFSET_MIN,
    digits=st.integers(min_value=0, max_value=9),
    t=st.sampled_from("Tt"),
    z=st.sampled_from(["Z", "z", "+00:00", "-00:00"]),
)
def test_every_rfc3339_form_gives_the_exact_millisecond(
    moment: datetime, offset_min: int, digits: int, t: str, z: str
) -> None:
    utc = moment.replace(tzinfo=UTC)
    offset = timedelta(minutes=offset_min)
    local = utc.astimezone(timezone(offset))
    fraction = f"{local.microsecond:06d}{'789'}"[:digits]
    zone = z if offset_min == 0 else local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:]
    text = local.strftime(f"%Y-%m-%d{t}%H:%M:%S") + (f".{fraction}" if digits else "") + zone
    # Truncated to the millisecond, never rounded up into the next one.
    expected = int(utc.replace(microsecond=0).timestamp()) * 1000 + int(fraction[:3].ljust(3, "0") or 0)
    ts, reasons = decode(json.dumps({"ts": text, "flow_lpm": 5.0}))
    assert (ts, reasons) == ([expected], []), text


@BUDGET
@given(moment=WINDOW, form=st.integers(min_value=0, max_value=7))
def test_iso8601_forms_that_are_not_rfc3339_are_refused(moment: datetime, form: int) -> None:
    iso_year, iso_week, iso_day = moment.isocalendar()
    text = [
        f"{iso_year}-W{iso_week:02d}-{iso_day}T{moment:%H:%M:%S}Z",  # week date
        f"{moment:%Y%m%dT%H%M%S}Z",  # basic format
        f"{moment:%Y-%m-%dT%H}Z",  # hour only
        f"{moment:%Y-%m-%dT%H:%M}Z",  # no seconds
        f"{moment:%Y-%m-%dT%H:%M:%S}",  # no zone
        f"{moment:%Y-%m-%d %H:%M:%S}Z",  # space instead of T
        f"{moment:%Y-%j}T{moment:%H:%M:%S}Z",  # ordinal date
        f"{moment:%Y-%m-%dT%H:%M:%S}+0700",  # offset without colon
    ][form]
    ts, reasons = decode(json.dumps({"ts": text, "flow_lpm": 5.0}))
    assert (ts, reasons) == ([], [Reason.SCHEMA_INVALID]), text


@BUDGET
@given(ms=st.integers(min_value=NOW_MS - 7 * 86_400_000 + 1000, max_value=NOW_MS))
def test_epoch_ms_as_integral_float_is_the_same_reading(ms: int) -> None:
    assert (
        decode(f'{{"ts": {ms}.0, "flow_lpm": 5}}') == decode(f'{{"ts": {ms}, "flow_lpm": 5}}') == ([ms], [])
    )
    assert decode(f'{{"ts": {ms}.5, "flow_lpm": 5}}') == ([], [Reason.SCHEMA_INVALID])


# --- documents: NaN/Infinity and repeated names anywhere --------------------------------------------


@dataclass(frozen=True)
class Doc:
    """A JSON document rendered by hand, so it can hold what json.dumps never writes."""

    text: str
    repeats: bool  # some object repeats a name
    non_finite: bool  # a NaN/Infinity literal somewhere


SPACE = st.sampled_from(["", " ", "  ", "\n", "\t", "\r\n"])
NAME = st.one_of(
    st.sampled_from(["ts", "flow_lpm", "purity_pct", "alarms", "readings", "x", "a:b", 'q"', "\\", "é"]),
    st.text(max_size=6),
)
TEXT = st.one_of(st.sampled_from(['":', '" :', "2025-11-26T07:00:00Z", ":::", '\\":']), st.text(max_size=6))
LEAF = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(lambda n: Doc(str(n), False, False)),
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: Doc(repr(f), False, False)),
    st.sampled_from(["true", "false", "null", "1e400", "-1e400"]).map(lambda s: Doc(s, False, False)),
    st.tuples(TEXT, st.booleans()).map(lambda t: Doc(json.dumps(t[0], ensure_ascii=t[1]), False, False)),
)
NON_FINITE = st.sampled_from(["NaN", "Infinity", "-Infinity"]).map(lambda s: Doc(s, False, True))


def _array(items: list[tuple[str, Doc, str]]) -> Doc:
    body = ",".join(f"{a}{d.text}{b}" for a, d, b in items)
    return Doc(f"[{body}]", any(d.repeats for _, d, _ in items), any(d.non_finite for _, d, _ in items))


def _object(members: list[tuple[str, str, Doc, bool]]) -> Doc:
    names = [n for n, _, _, _ in members]
    body = ",".join(f"{json.dumps(n, ensure_ascii=ascii_)}{s}:{s}{d.text}" for n, s, d, ascii_ in members)
    return Doc(
        "{" + body + "}",
        len(set(names)) < len(names) or any(d.repeats for _, _, d, _ in members),
        any(d.non_finite for _, _, d, _ in members),
    )


def documents(leaf: st.SearchStrategy[Doc]) -> st.SearchStrategy[Doc]:
    return st.recursive(
        leaf,
        lambda children: st.one_of(
            st.lists(st.tuples(SPACE, children, SPACE), max_size=4).map(_array),
            st.lists(st.tuples(NAME, SPACE, children, st.booleans()), max_size=5).map(_object),
        ),
        max_leaves=14,
    )


@BUDGET
@given(doc=documents(LEAF))
def test_repeated_names_are_found_anywhere_and_never_invented(doc: Doc) -> None:
    _, reasons = decode(doc.text)
    assert (Reason.DUPLICATE_KEY in reasons) == doc.repeats, doc.text


@BUDGET
@given(doc=documents(st.one_of(LEAF, NON_FINITE)))
def test_nan_or_infinity_anywhere_refuses_the_whole_message(doc: Doc) -> None:
    ts, reasons = decode(doc.text)
    if doc.non_finite:
        assert (ts, reasons) == ([], [Reason.NOT_FINITE]), doc.text
    else:
        assert Reason.NOT_FINITE not in reasons


@BUDGET
@given(
    base=st.fixed_dictionaries(
        {"ts": st.just(NOW_MS), "flow_lpm": st.floats(0, 25), "note": TEXT, "n": st.integers()}
    ),
    name=st.sampled_from(["ts", "flow_lpm", "note", "n"]),
    sep=st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]),
)
def test_a_repeated_name_in_a_reading_is_refused(
    base: dict[str, object], name: str, sep: tuple[str, str]
) -> None:
    text = json.dumps(base, separators=sep)
    assert decode(text)[1] == []
    repeated = text[:-1] + sep[0] + json.dumps(name) + sep[1] + json.dumps(base[name]) + "}"
    assert decode(repeated) == ([], [Reason.DUPLICATE_KEY])


# --- numbers: one reason per kind of problem ----------------------------------------------------------

FIELD_LIMIT = {"flow_lpm": 25, "purity_pct": 100, "temp_c": 150, "run_hours": 1_000_000, "seq": 2**63 - 1}


@BUDGET
@given(
    field=st.sampled_from(sorted(FIELD_LIMIT)),
    number=st.one_of(
        st.integers(min_value=20, max_value=4000).map(lambda n: "9" * n),  # longer than any limit
        st.integers(min_value=19, max_value=400).map(lambda e: f"1e{e}"),  # 1e30 .. 1e400 (inf)
        st.integers(min_value=19, max_value=400).map(lambda e: f"-1.5E+{e}"),
    ),
)
def test_numbers_too_large_for_their_field_are_out_of_range_however_written(field: str, number: str) -> None:
    if field == "seq" and "e" in number.lower():
        number = "9" * 30  # seq is an integer: 1e19 there is a type error (schema_invalid)
    filler = "" if field in {"flow_lpm", "purity_pct"} else ', "flow_lpm": 5'
    text = f'{{"ts": {NOW_MS}, "{field}": {number}{filler}}}'
    assert decode(text) == ([], [Reason.OUT_OF_RANGE]), text


@BUDGET
@given(number=st.one_of(st.integers(min_value=MAX_TS_MS + 1), st.floats(min_value=MAX_TS_MS + 1)))
def test_ts_beyond_year_9999_is_out_of_range(number: float) -> None:
    text = f'{{"ts": {number if math.isfinite(number) else "1e400"}, "flow_lpm": 5}}'
    assert decode(text) == ([], [Reason.OUT_OF_RANGE]), text


@BUDGET
@given(
    count=st.integers(min_value=1, max_value=20),
    repeat_at=st.one_of(st.none(), st.integers(min_value=0, max_value=19)),
    rfc3339=st.booleans(),
    sep=st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]),
)
def test_a_repeated_name_in_any_reading_of_a_batch_is_refused(
    count: int, repeat_at: int | None, rfc3339: bool, sep: tuple[str, str]
) -> None:
    readings = []
    for i in range(count):
        ts: object = f"2025-11-26T06:{i:02d}:00Z" if rfc3339 else NOW_MS - i * 60_000
        text = json.dumps({"ts": ts, "flow_lpm": 5.0, "alarms": []}, separators=sep)
        if i == repeat_at:
            text = text[:-1] + sep[0] + json.dumps("flow_lpm") + sep[1] + "0.0}"
        readings.append(text)
    _, reasons = decode('{"readings": [' + ",".join(readings) + "]}")
    assert (Reason.DUPLICATE_KEY in reasons) == (repeat_at is not None and repeat_at < count)
