"""Grafana's side of a query, done in Python: which variables a query uses, and how Grafana expands them.

No Grafana server runs on oxyfleet's build machines, and Grafana silently leaves an unknown ``$name`` in
the query text (the panel then shows "No data"; issue 14 found a whole dashboard like that). So the build
refuses a dashboard whose queries use a variable it does not define, and the tests expand every query
exactly as Grafana's InfluxDB (InfluxQL) datasource does before running it on a real InfluxDB:

- ``$timeFilter`` -> ``time >= <from>ms and time <= <to>ms``; ``$__interval``/``$interval`` -> the
  interval Grafana picked (the tests pass one);
- a multi-value or "include All" variable in a regex (``/^$unit$/``): each value regex-escaped, one
  value as itself, several as ``(a|b)``, "All" as the variable's ``allValue`` (``.*``);
- a single-value variable without "All": its value as is (Grafana does not escape those).
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = ["BUILTINS", "UndefinedVariableError", "expand", "problems", "regex_escape", "used_variables"]

# Grafana's global variables and InfluxQL macros; ``__value``/``__url_time_range`` etc. appear in links.
BUILTINS: Final = frozenset(
    {
        "timeFilter",
        "__interval",
        "interval",
        "__interval_ms",
        "__range",
        "__from",
        "__to",
        "__value",
        "__url_time_range",
        "__all_variables",
        "__field",
        "__series",
        "__data",
        "__dashboard",
        "__org",
        "__user",
    }
)
_VAR: Final = re.compile(r"\$\{(\w+)(?:[.:][^}]*)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)")
_TAG_ALIAS: Final = re.compile(r"\$tag_(\w+)")


class UndefinedVariableError(KeyError):
    """A query names a variable its dashboard does not define."""


def used_variables(text: str) -> set[str]:
    """Variable names ``text`` refers to (``$x``, ``${x}``, ``${x:fmt}``, ``[[x]]``), aliases' ``$tag_`` aside."""
    found = {next(g for g in m.groups() if g) for m in _VAR.finditer(text)}
    return {name for name in found if not name.startswith("tag_")}


def _group_by_tags(query: str) -> set[str]:
    """Tags of the outermost (last) GROUP BY clause."""
    if "GROUP BY" not in query:
        return set()
    clause = re.split(r" fill\(| ORDER BY | LIMIT ", query.rsplit("GROUP BY", 1)[1])[0]
    return {p.strip().strip('"') for p in clause.split(",") if not p.strip().startswith("time(")}


def problems(dashboard: dict[str, Any]) -> list[str]:
    """Undefined variables in variable and panel queries, and ``$tag_x`` aliases whose query drops ``x``."""
    defined = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    out: list[str] = []
    texts = [
        (f"variable {v['name']}", v.get("query", "")) for v in dashboard.get("templating", {}).get("list", [])
    ]
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            where = f"panel {panel['title']!r} {target['refId']}"
            texts.append((where, target["query"]))
            alias = target.get("alias", "")
            texts.append((f"{where} alias", alias))
            out.extend(
                f"{where}: alias uses $tag_{tag} but the query does not group by {tag}"
                for tag in _TAG_ALIAS.findall(alias)
                if tag not in _group_by_tags(target["query"])
            )
    out.extend(
        f"{where}: undefined variable ${name}"
        for where, text in texts
        for name in sorted(used_variables(text) - defined - BUILTINS)
    )
    return out


def regex_escape(value: str) -> str:
    """Escape regex metacharacters the way Grafana does for values placed inside ``/.../``."""
    return re.sub(r"([\\^$*+?.()|{}\[\]/-])", r"\\\1", value)


def expand(
    query: str,
    variables: list[dict[str, Any]],
    selected: dict[str, list[str]],
    start_ms: int,
    end_ms: int,
    interval: str = "1m",
) -> str:
    """``query`` as Grafana sends it, with ``selected`` values (a variable left out is "All", or must not be).

    Raises:
        UndefinedVariableError: the query uses a variable ``variables`` does not define, or a variable
            without "All" that ``selected`` gives no value.
    """
    by_name = {v["name"]: v for v in variables}
    query = query.replace("$timeFilter", f"time >= {start_ms}ms and time <= {end_ms}ms")
    query = query.replace("$__interval", interval).replace("$interval", interval)

    def value(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        variable = by_name.get(name)
        if variable is None:
            raise UndefinedVariableError(name)
        values = selected.get(name)
        if values is None:
            if not variable.get("includeAll"):
                raise UndefinedVariableError(f"{name} has no value and no 'All'")
            return str(variable.get("allValue") or ".*")
        if not (variable.get("multi") or variable.get("includeAll")):
            return values[0]
        escaped = [regex_escape(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    return _VAR.sub(value, query)
