"""The layout's rules that import-linter cannot see: names spelt once, and modules a reader can hold.

- Every measurement and store-owned field name is spelt in ``store/schema.py`` only: a string literal
  (or a piece of an f-string) elsewhere that names a measurement, as a value, a line-protocol head or
  after FROM/INTO, or a store-owned field inside an InfluxQL query, fails.
  Telemetry field names are the payload models' (the device contract) and may appear in queries.
- A module over ~400 lines says why at its top (a docstring paragraph starting "Long module:").
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from store.schema import STATES as _STATES
from store.schema import (
    ConnectionField,
    EventField,
    LateField,
    Measurement,
    RejectedField,
    StateField,
    TelemetryField,
    seconds_field,
)

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "oxyfleet",
    "core",
    "store",
    "ingest",
    "health",
    "report",
    "dashboards",
    "fleetsim",
    "devices",
    "bench",
)
MAX_LINES = 420

MEASUREMENTS = {m.value for m in Measurement}
# Field names distinctive enough to mean "the stored field" wherever they stand in an InfluxQL literal.
# Short common words (state, reason, code, to, from, count, online, topic, detail, payload) also name other
# things, so they are checked only through the measurement rule (a query has to name its measurement);
# outside queries the same words are API and report keys, which are not stored names.
STORE_FIELDS = {
    StateField.MAINTENANCE_DUE.value,
    EventField.FROM_REASON.value,
    LateField.FROM_MS.value,
    LateField.TO_MS.value,
    RejectedField.PAYLOAD_BYTES.value,
    RejectedField.RECEIVED_AT.value,
    TelemetryField.ALARM_COUNT.value,
    *(seconds_field(s) for s in _STATES),
}
assert ConnectionField.ONLINE  # every field enum is imported: a new one must be considered here

_QUERY = re.compile(r"\b(?:FROM|INTO)\s+\"?(" + "|".join(sorted(MEASUREMENTS)) + r")\b", re.IGNORECASE)
_INFLUXQL = re.compile(r"\b(SELECT|WHERE|GROUP BY)\b", re.IGNORECASE)
_WORD = re.compile(r"\b(" + "|".join(sorted(STORE_FIELDS)) + r")\b")
# "telemetry" is also the MQTT channel (oxygen/{kind}/{unit}/telemetry): as a bare value it is allowed.
_BARE_ALLOWED = {"telemetry"}


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants, and the literal pieces of f-strings, except docstrings."""
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def _problem(text: str) -> str | None:
    """What is wrong with one literal, or None."""
    if text in MEASUREMENTS and text not in _BARE_ALLOWED:
        return f"measurement {text!r}"
    if text.startswith(tuple(f"{m}," for m in MEASUREMENTS)):
        return f"line protocol for {text.split(',', maxsplit=1)[0]!r}"
    if match := _QUERY.search(text):
        return f"query on {match.group(1)!r}"
    if _INFLUXQL.search(text) and (match := _WORD.search(text)):
        return f"field {match.group(1)!r} in a query"
    return None


def offending_literals(source: str) -> list[tuple[int, str]]:
    """(line, problem) for each literal in ``source`` that spells a stored name."""
    return [(n, p) for n, text in _literals(ast.parse(source)) if (p := _problem(text)) is not None]


# Files that may spell stored names, each with the reason.
PENDING: dict[str, str] = {
    # Not pending: a benchmark peer standing for code outside oxyfleet; it must not use oxyfleet's store.
    "bench/naive_ingester.py": "a peer in the ingest benchmark, deliberately independent of oxyfleet",
}


def test_stored_names_are_spelt_only_in_the_storage_layer() -> None:
    problems = [
        f"{rel}:{lineno}: {problem}"
        for path in _sources()
        if path.parts[len(ROOT.parts)] != "store" and (rel := str(path.relative_to(ROOT))) not in PENDING
        for lineno, problem in offending_literals(path.read_text(encoding="utf-8"))
    ]
    assert not problems, "use store.schema instead of spelling stored names:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "caught"),
    [
        ('q = "SELECT * FROM unit_state"', True),
        ('q = f"SELECT last(x) FROM \\"late_data\\" WHERE {w}"', True),
        ('m = "oxyfleet_ingest"', True),
        ('line = f"rejected,reason={r} x=1"', True),
        ('q = "SELECT last(maintenance_due) AS due"', True),
        ('api_key = "maintenance_due"', False),
        ('q = f"SELECT sum(no_data_s) FROM {m}"', True),
        ('topic = "telemetry"', False),
        ('"""A docstring naming unit_state is prose."""', False),
        ('q = f"SELECT purity_pct FROM {Measurement.TELEMETRY}"', False),
    ],
)
def test_the_name_check_catches_what_it_should(source: str, caught: bool) -> None:
    assert bool(offending_literals(source)) is caught


LONG_PENDING: dict[str, str] = {}


def _long_without_reason() -> list[str]:
    out: list[str] = []
    for path in _sources():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines <= MAX_LINES or str(path.relative_to(ROOT)) in LONG_PENDING:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if "Long module:" not in doc:
            out.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    return out


def test_long_modules_say_why() -> None:
    long = _long_without_reason()
    assert not long, f"over {MAX_LINES} lines without a 'Long module:' reason at the top: {long}"
