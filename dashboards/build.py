"""Render oxyfleet's Grafana files (``python -m dashboards.build``; ``--check`` fails when they are stale).

The committed files under ``dashboards/`` are what Grafana loads (file provisioning in docker compose)
and what ``oxyfleet dashboards push`` sends; they ship as package data in the wheel and the image. A test
fails when they differ from what this module renders, and the integration tests run every query in them
against a real InfluxDB. JSON throughout: provisioning YAML is written as JSON, which YAML parsers read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Final

from dashboards.alerting import NOTIFY_VARIANTS, alert_rules, notifications
from dashboards.boards import DASHBOARDS
from dashboards.lint import BUILTINS, problems, used_variables

__all__ = ["HERE", "main", "render"]

HERE: Final = Path(__file__).resolve().parent


def render() -> dict[str, str]:
    """Path below dashboards/ -> text, as committed.

    Raises:
        ValueError: a query uses a variable its dashboard does not define (alert rules: any variable but
            Grafana's macros), which Grafana would send as literal text.
    """
    files: dict[str, str] = {}
    found: list[str] = []
    for name, build in DASHBOARDS.items():
        board = build()
        found.extend(f"{name}: {p}" for p in problems(board))
        files[f"json/{name}"] = json.dumps(board, indent=2, sort_keys=True) + "\n"
    rules = alert_rules()
    found.extend(
        f"alert rule {r['uid']}: undefined variable ${v}"
        for g in rules["groups"]
        for r in g["rules"]
        for v in sorted(used_variables(r["data"][0]["model"]["query"]) - BUILTINS)
    )
    if found:
        raise ValueError("queries use undefined variables:\n" + "\n".join(found))
    files["provisioning/alerting/rules.yaml"] = json.dumps(rules, indent=2) + "\n"
    for name, integrations in NOTIFY_VARIANTS.items():
        files[f"provisioning/notify/{name}"] = json.dumps(notifications(integrations), indent=2) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    """Write the files, or with ``--check`` report the stale ones and return 1."""
    check = "--check" in (sys.argv[1:] if argv is None else argv)
    stale = []
    for name, text in render().items():
        path = HERE / name
        if check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        sys.stderr.write(f"stale dashboards (run python -m dashboards.build): {', '.join(stale)}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
