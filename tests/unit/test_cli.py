"""The CLI's messages as a user meets them: every option explained, filters, verdicts, errors in words."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from io import StringIO
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from rich.console import Console

import oxyfleet
from core.errors import SinkError
from core.settings import load_settings
from devices.inventory import SAMPLE_INVENTORY, load_inventory, write_inventory
from oxyfleet.cli import cli
from oxyfleet.cli.errors import describe, handled
from oxyfleet.cli.output import Column, render_table
from store.reader import InfluxQL

ROOT = Path(__file__).resolve().parents[2]
LONG = "RS Pelabuhan Sunda Kelapa Tanjung Priok Jakarta Utara"


pytestmark = pytest.mark.usefixtures("clean_env")


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found: list[tuple[tuple[str, ...], click.Command]] = [(path, group)]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


def test_every_command_and_option_has_help() -> None:
    missing = [
        f"oxyfleet {' '.join(path)} {param.opts[0]}".replace("  ", " ")
        for path, command in _commands(cli)
        for param in command.params
        if isinstance(param, click.Option) and not (param.help or "").strip()
    ]
    missing += [f"oxyfleet {' '.join(path)}" for path, command in _commands(cli) if not command.help]
    assert not missing, f"no help text: {missing}"
    assert len(_commands(cli)) >= 17  # the walk did reach the groups' commands


def test_every_command_runs_inside_the_one_error_mapping() -> None:
    unmapped = [
        " ".join(path)
        for path, command in _commands(cli)
        if not isinstance(command, click.Group)
        and getattr(command.callback, "__code__", None) is not handled(lambda: None).__code__
    ]
    assert not unmapped, f"commands without @handled: {unmapped}"


def test_every_help_page_renders() -> None:
    runner = CliRunner()
    for path, _command in _commands(cli):
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"oxyfleet {oxyfleet.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", oxyfleet.__version__)


def test_qos_is_explained() -> None:
    result = CliRunner().invoke(cli, ["simulate", "--help"])
    assert re.search(r"--qos INTEGER RANGE\s+MQTT QoS of every publish", result.output), result.output


# --- validate-payload ---------------------------------------------------------------------------------


def test_validate_payload_gives_a_verdict_on_a_status_payload(tmp_path: Path) -> None:
    sample = tmp_path / "status.txt"
    sample.write_text("offline")
    result = CliRunner().invoke(
        cli, ["validate-payload", str(sample), "--topic", "oxygen/docs/DOCS-PAPUA-01/status"]
    )
    assert result.exit_code == 0, result.output
    assert result.output == (
        "valid: status 'offline' of docs unit DOCS-PAPUA-01 (topic oxygen/docs/DOCS-PAPUA-01/status)\n"
    )
    sample.write_text("gone")
    bad = CliRunner().invoke(cli, ["validate-payload", str(sample), "--topic", "oxygen/docs/D-1/status"])
    assert bad.exit_code == 1
    assert "status payload must be 'online' or 'offline'" in bad.output


def test_validate_payload_refuses_a_kind_that_contradicts_the_topic(tmp_path: Path) -> None:
    sample = tmp_path / "p.json"
    sample.write_text(json.dumps({"ts": 1764140400000, "purity_pct": 93.0}))
    topic = "oxygen/concentrator/OC-1/telemetry"
    result = CliRunner().invoke(cli, ["validate-payload", str(sample), "--kind", "docs", "--topic", topic])
    assert result.exit_code == 2
    assert "--kind docs contradicts the topic, which is a concentrator topic" in result.output
    assert "valid:" not in result.output
    agreed = CliRunner().invoke(
        cli, ["validate-payload", str(sample), "--kind", "concentrator", "--topic", topic, "--no-time-window"]
    )
    assert agreed.exit_code == 0, agreed.output


def test_validate_payload_names_the_field_a_misspelt_one_meant(tmp_path: Path) -> None:
    sample = tmp_path / "p.json"
    sample.write_text(json.dumps({"ts": 1764140400000, "purity": 93.0, "flow_lpm": 5.0, "rssi_dbm": -70}))
    result = CliRunner().invoke(cli, ["validate-payload", str(sample), "--no-time-window"])
    assert result.exit_code == 0, result.output
    assert (
        "warning: unknown fields are ignored: purity (did you mean purity_pct?), rssi_dbm\n" in result.output
    )


def test_validate_payload_warns_about_a_misspelt_field_in_an_invalid_payload(tmp_path: Path) -> None:
    sample = tmp_path / "p.json"
    sample.write_text(json.dumps({"readings": [{"ts": 1764140400000, "purity": 93.0}]}))
    result = CliRunner().invoke(cli, ["validate-payload", str(sample), "--no-time-window"])
    assert result.exit_code == 1
    assert "INVALID" in result.output
    assert "purity (did you mean purity_pct?)" in result.output


# --- dashboards push and error messages ---------------------------------------------------------------


def test_dashboards_push_without_a_token_names_grafana_token() -> None:
    result = CliRunner().invoke(cli, ["dashboards", "push", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "set GRAFANA_TOKEN" in result.output


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_grafana_is_said_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", "t")
    url = f"http://127.0.0.1:{_closed_port()}"
    result = CliRunner().invoke(cli, ["dashboards", "push", "--url", url])
    assert result.exit_code == 1
    assert result.output == f"oxyfleet: cannot reach Grafana at {url}: connection refused\n"


def test_unreachable_influxdb_is_said_in_words_without_library_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("OXYFLEET_INFLUX__URL", url)
    reader = InfluxQL.from_settings(load_settings().influx)
    with pytest.raises(SinkError) as info:
        reader.rows("SHOW DATABASES")
    assert " object at 0x" in str(info.value)  # what the storage layer's message quotes from urllib3
    assert describe(info.value) == "network error talking to InfluxDB: connection refused"
    result = CliRunner().invoke(cli, ["uptime"])
    assert result.exit_code == 1
    assert result.output == (
        "oxyfleet: network error talking to InfluxDB: connection refused "
        f"(is InfluxDB running at {url}? `oxyfleet check` tells more)\n"
    )


def test_a_bad_duration_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["uptime", "--since", "7 days"])
    assert result.exit_code == 2
    assert "'7 days' is not a duration like 60s, 90m, 12h, 30d" in result.output


# --- devices list: filters and tables -----------------------------------------------------------------


def test_filters_ignore_case_and_a_filter_matching_nothing_exits_1() -> None:
    runner = CliRunner()
    inv = str(SAMPLE_INVENTORY)
    upper = runner.invoke(cli, ["devices", "list", "--file", inv, "--province", "Papua"])
    lower = runner.invoke(cli, ["devices", "list", "--file", inv, "--province", "papua"])
    assert upper.exit_code == lower.exit_code == 0
    assert upper.output == lower.output and "DOCS-PAPUA-01" in lower.output
    typo = runner.invoke(cli, ["devices", "list", "--file", inv, "--hospital", "rs kasih semarangg"])
    assert typo.exit_code == 1
    assert typo.output == (
        "oxyfleet: no unit matches --hospital 'rs kasih semarangg'; no hospital is called "
        "'rs kasih semarangg' (did you mean 'RS Kasih Semarang'?)\n"
    )
    none = runner.invoke(cli, ["devices", "list", "--file", inv, "--province", "papua", "--kind", "docs"])
    assert none.exit_code == 0
    both = runner.invoke(
        cli, ["devices", "list", "--file", inv, "--province", "papua", "--hospital", "RS Kasih Semarang"]
    )
    assert both.exit_code == 1
    assert "no unit matches --hospital 'RS Kasih Semarang' --province 'papua'" in both.output
    assert "no hospital is called" not in both.output  # both names exist, just not together


def _long_named_inventory(tmp_path: Path) -> Path:
    sample = load_inventory(SAMPLE_INVENTORY)
    units = [u for u in sample.units.values() if u.kind == "concentrator"][:3]
    path = tmp_path / "inventory.csv"
    text = write_inventory(units).replace(units[0].hospital, LONG)
    path.write_text(text)
    return path


def test_plain_table_when_not_on_a_terminal_cuts_no_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["devices", "list", "--file", str(_long_named_inventory(tmp_path))])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["unit", "kind", "model", "hospital", "province", "source", "commissioned"]
    assert LONG in result.output
    assert "\x1b[" not in result.output  # no colour codes for scripts
    assert all(line == line.rstrip() for line in lines)
    assert len({line.index("commissioned") for line in lines[:1]}) == 1
    # columns line up: every row's date starts where the header's last column does
    start = lines[0].index("commissioned")
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", line[start:]) for line in lines[1:4])


@pytest.mark.parametrize("width", [80, 100, 140])
def test_terminal_table_fits_the_width_and_cuts_no_name(width: int) -> None:
    columns = [Column("unit"), Column("hospital"), Column("state"), Column("reason", wrap=True)]
    columns += [Column("since (UTC)", drop=1), Column("avail %", justify="right", drop=2)]
    rows = [
        ["OC-JKT-00001", LONG, "underperforming", "low_purity_and_low_flow", "2026-11-30 00:34:38", "93.25"],
        ["DOCS-PAPUA-01", "RSUD Pegunungan Tengah", "in_spec", "", "2026-11-29 23:00:00", "100.00"],
    ]
    console = Console(file=StringIO(), width=width, force_terminal=True, color_system=None)
    text = render_table(columns, rows, console=console)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in text and "..." not in text
    words = text.split()
    assert all(word in words for word in [*LONG.split(), "RSUD", "Pegunungan", "Tengah", "OC-JKT-00001"])
    if width >= 140:  # room for everything: each row on one line, every column shown
        assert LONG in text and len(lines) == 3 and "93.25" in text
    if width == 100:  # the optional columns give way before any name wraps
        assert LONG in text and "(since (UTC), avail % hidden to fit the terminal" in text


# --- progress: on a terminal only ---------------------------------------------------------------------


def _big_inventory(tmp_path: Path, n: int) -> Path:
    template = next(iter(load_inventory(SAMPLE_INVENTORY).units.values()))
    lines = write_inventory([template]).splitlines()
    row = lines[1].split(",", 1)[1]
    path = tmp_path / "big.csv"
    path.write_text("\n".join([lines[0], *(f"OC-BIG-{i:05d},{row}" for i in range(n))]) + "\n")
    return path


def test_credentials_for_a_large_fleet_show_progress_on_a_terminal_only(tmp_path: Path, on_terminal) -> None:
    inventory = _big_inventory(tmp_path, 3000)
    args = ["devices", "credentials", "--file", str(inventory), "--out"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OXYFLEET_")}
    code, terminal = on_terminal([*args, str(tmp_path / "a")], env, tmp_path)
    assert code == 0, terminal
    assert "hashing passwords" in terminal
    assert re.search(r"\d+/3000", terminal), terminal
    piped = subprocess.run(
        [sys.executable, "-m", "oxyfleet", *args, str(tmp_path / "b")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert "hashing" not in piped.stderr and "hashing" not in piped.stdout
    assert "passwd and acl for 3000 units (3000 new passwords, 0 kept)" in piped.stdout


def test_the_demo_table_cuts_no_hospital_name() -> None:
    from oxyfleet.demo import _render

    units = [
        {"unit_id": "OC-1", "hospital": LONG, "points": 3, "purity": 93.0, "flow": 5.0},
        {"unit_id": "OC-2", "hospital": "RS Kecil", "points": 2, "purity": None, "flow": None},
    ]
    lines = _render(units, {}, 5, 10.0, {}).splitlines()
    assert LONG in lines[2]
    assert lines[1].index("points") + len("points") == lines[2].index(" 3") + 2 == lines[3].index(" 2") + 2


def _caused(outer: Exception, inner: BaseException) -> Exception:
    outer.__cause__ = inner  # what `raise outer from inner` leaves behind
    return outer


def test_describe_names_the_cause_of_network_failures() -> None:
    import urllib3.exceptions

    conn = object()
    for cause, words in [
        (
            socket.gaierror(-2, "Name or service not known"),
            "cannot resolve the host name (Name or service not known)",
        ),
        (TimeoutError("timed out"), "timed out"),
        (ConnectionResetError(104, "Connection reset by peer"), "connection reset by peer"),
    ]:
        lib = _caused(urllib3.exceptions.NewConnectionError(conn, f"{conn}: Failed: {cause}"), cause)  # type: ignore[arg-type]
        sink = _caused(SinkError(f"network error talking to InfluxDB: {lib}"), lib)
        assert describe(sink) == f"network error talking to InfluxDB: {words}"
    read_timeout = urllib3.exceptions.ReadTimeoutError(None, "/query", "Read timed out.")  # type: ignore[arg-type]
    assert (
        describe(_caused(SinkError(f"network error: {read_timeout}"), read_timeout))
        == "network error: timed out"
    )
    # A file's error is no network failure and keeps its words.
    assert describe(PermissionError(13, "Permission denied", "/x")) == "[Errno 13] Permission denied: '/x'"
