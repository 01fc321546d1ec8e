"""Golden cases per device kind: payload + topic -> expected line protocol and/or expected rejections.

Each folder under tests/golden/<kind>/<case>/ holds payload.json (the exact bytes a device sends),
topic.txt, and expected.lp (lines written) and/or expected.err ("reason: detail" per rejection), like
Telegraf's parser testdata. The clock is fixed at 2025-11-26T07:00:00Z so time rules are deterministic.
Regenerate after an intended change with OXYFLEET_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingest.decode import Decoder, Inbound
from store.lineproto import LineBuilder

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
NOW_MS = 1764140400000
CASES = sorted(p for p in GOLDEN.glob("*/*") if p.is_dir())


def render(case: Path) -> tuple[str, str]:
    topic = (case / "topic.txt").read_text().strip()
    payload = (case / "payload.json").read_bytes()
    decoded = Decoder("oxygen").decode(Inbound(topic, payload, NOW_MS * 1_000_000))
    builder = LineBuilder(instance="golden")
    lines = [builder.telemetry(r) for r in decoded.readings] + [
        builder.connection(c) for c in decoded.connections
    ]
    errors = [f"{r.reason.value}: {r.detail}" for r in decoded.rejections]
    return "".join(f"{x}\n" for x in lines), "".join(f"{x}\n" for x in errors)


def test_there_are_cases_for_every_kind() -> None:
    kinds = {c.parent.name for c in CASES}
    assert kinds == {"concentrator", "docs"}
    assert len(CASES) >= 25


@pytest.mark.parametrize("case", CASES, ids=[f"{c.parent.name}/{c.name}" for c in CASES])
def test_golden(case: Path) -> None:
    lp, err = render(case)
    if os.environ.get("OXYFLEET_UPDATE_GOLDEN") == "1":
        for name, text in (("expected.lp", lp), ("expected.err", err)):
            path = case / name
            if text:
                path.write_text(text)
            elif path.exists():
                path.unlink()
    expected_lp = (case / "expected.lp").read_text() if (case / "expected.lp").exists() else ""
    expected_err = (case / "expected.err").read_text() if (case / "expected.err").exists() else ""
    assert (lp, err) == (expected_lp, expected_err)
    # The case name says which outcome it is about, so a regenerated file cannot silently flip it.
    if case.name.startswith("err_"):
        assert err and not lp
    elif "bad" not in case.name:
        assert lp and not err
