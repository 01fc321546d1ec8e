"""The payload as a JSON document: RFC 8259 JSON, checked whole before any field is looked at.

pydantic-core's parser (the fast one) keeps the last value of a repeated name and, when asked, reads
NaN/Infinity; neither is JSON, and a document that has them is refused whole, whatever field they are in.
Both checks are nearly free for a valid message: NaN/Infinity make the strict parse fail (only then is the
payload looked at again), and repeated names are ruled out by counting (see :func:`_may_repeat_names`).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic_core import from_json

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["DocumentError", "load"]

Problem = Literal["not_json", "not_finite", "out_of_range", "duplicate_key"]


class DocumentError(ValueError):
    """The payload is not a JSON document oxyfleet accepts; ``problem`` is the rejection reason's value."""

    def __init__(self, problem: Problem, detail: str) -> None:
        super().__init__(detail)
        self.problem: Problem = problem
        self.detail = detail


def load(payload: bytes) -> Any:  # noqa: ANN401 - any JSON value
    """Parse ``payload``; raise :class:`DocumentError` for anything that is not strict RFC 8259 JSON."""
    try:
        data = from_json(payload, allow_inf_nan=False)
    except ValueError as exc:
        raise _parse_error(payload, exc) from None
    if _may_repeat_names(payload, data):
        repeated = _repeated_names(payload)
        if repeated:
            names = ", ".join(repr(n[:40]) for n in repeated[:5])
            raise DocumentError(
                "duplicate_key",
                f"an object repeats the name {names}: JSON names must be unique, and which value is meant "
                "is ambiguous",
            )
    return data


# The end of an object member's name: a closing quote, optional whitespace, a colon. Every member of every
# object matches once; a string value can only add matches (`":` inside it), never hide one.
_NAME_END: Final = re.compile(rb'"[ \t\n\r]*:')


def _count_names(value: object) -> tuple[int, int]:
    """Member names in a parsed document (repeats already merged by the parser), and colons in its strings."""
    if type(value) is str:
        return 0, value.count(":")
    if type(value) is dict:
        names, colons = len(value), 0
        children: Iterable[object] = value.values()
    elif type(value) is list:
        names, colons, children = 0, 0, value
    else:
        return 0, 0
    for child in children:
        if type(child) in (dict, list, str):
            n, c = _count_names(child)
            names += n
            colons += c
    return names, colons


def _may_repeat_names(payload: bytes, data: object) -> bool:  # noqa: PLR0911 - one exit per proof
    """Whether the document might repeat a name in an object; False is certain, True needs a closer look.

    pydantic-core's parser keeps the last value of a repeated name silently. Each member needs a colon
    outside strings, so when the payload holds no more colons than the parsed document has names (after
    taking away the colons its strings hold, when no escape can hide one), no name was merged away. For a
    reading this costs one ``bytes.count`` (~0.1 µs), against ~10 µs for re-parsing every message with
    ``json.loads(object_pairs_hook=...)``.
    """
    colons = payload.count(b":")
    if type(data) is dict:
        # len(data) <= names in the whole document <= members in the text <= colons, so equality of the
        # two ends proves there is no repeat, nested objects or not. RFC 3339 text holds two colons,
        # which are inside a string when no escape (a backslash) can have written them differently.
        names = len(data)
        if colons == names:
            return False
        ts = data.get("ts")
        if type(ts) is str and colons - ts.count(":") == names and b"\\" not in payload:
            return False
        readings = data.get("readings")
        if type(readings) is list and names == 1 and payload.count(b"{") == len(readings) + 1:
            # A batch of flat readings (every brace is accounted for): its names counted in C, not
            # walked in Python (the walk cost ~1 µs a reading, a sixth of decoding it).
            if not all(type(r) is dict for r in readings):
                return True
            names = 1 + sum(map(len, readings))
            if colons == names:
                return False
            in_ts = sum(t.count(":") for r in readings if type(t := r.get("ts")) is str)
            return not (colons - in_ts == names and b"\\" not in payload) and (
                len(_NAME_END.findall(payload)) != names
            )
    names, in_strings = _count_names(data)
    if colons == names or (colons - in_strings == names and b"\\" not in payload):
        return False
    return len(_NAME_END.findall(payload)) != names


def _repeated_names(payload: bytes) -> list[str]:
    """The names an object of ``payload`` repeats (the slow, exact check behind :func:`_may_repeat_names`)."""
    import json  # noqa: PLC0415 - only on the rare path

    repeated: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen and name not in repeated:
                repeated.append(name)
            seen.add(name)
        return dict(pairs)

    try:
        json.loads(payload, object_pairs_hook=pairs_hook)
    except (ValueError, RecursionError):  # already parsed once; json's own limits (digits, depth) differ
        return []
    return repeated


def _non_finite_paths(value: object, path: str = "") -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        shown = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return [f"{path or 'payload'} is {shown}"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite_paths(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite_paths(v, f"{path}[{i}]")]
    return []


def _parse_error(payload: bytes, exc: ValueError) -> DocumentError:
    """Why pydantic-core refused the payload: NaN/Infinity, a number beyond any double, or not JSON."""
    if b"NaN" in payload or b"Infinity" in payload:
        try:
            data = from_json(payload, allow_inf_nan=True)
        except ValueError:
            pass
        else:
            found = ", ".join(_non_finite_paths(data)[:5])
            return DocumentError(
                "not_finite",
                f"NaN and Infinity are not JSON numbers (RFC 8259), so the whole message is refused: {found}",
            )
    text = str(exc)
    if text.startswith("number out of range"):
        return DocumentError("out_of_range", f"a number has more digits than any field accepts ({text})")
    return DocumentError("not_json", f"payload is not UTF-8 JSON: {text}")
