"""The Docker deployment, checked statically (no Docker engine runs where the tests run).

docker-compose.yml is validated against the Compose specification's JSON Schema with check-jsonschema,
as an operator's CI would; every host path it mounts must exist in the repository or be one the docs
tell the operator to make; every variable it interpolates is documented; the image installs exactly the
locked dependencies and its build context keeps the packages and drops secrets.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parent.parent.parent
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"
LOCK = ROOT / "docker" / "requirements.lock"
OPERATIONS = ROOT / "docs" / "operations.md"

# Host paths the operator provides (made by commands in README "With Docker" / docs/operations.md).
OPERATOR_PROVIDED = ("./secrets/mqtt", "./secrets/certs")


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def check_jsonschema(document: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or "check-jsonschema"
    return subprocess.run(
        [exe, "--schemafile", str(SCHEMA), str(document)], capture_output=True, text=True, check=False
    )


def test_compose_file_follows_the_compose_specification() -> None:
    done = check_jsonschema(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_catches_a_wrong_compose_file(tmp_path: Path) -> None:
    data = compose()
    data["services"]["ingester"]["healthcheck"]["intervall"] = "5s"  # a typo the schema must refuse
    data["services"]["mosquitto"]["cap_drop"] = "ALL"  # a string where a list is required
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(data))
    done = check_jsonschema(broken)
    assert done.returncode == 1
    assert "intervall" in done.stdout and "cap_drop" in done.stdout


def _host_path(source: str) -> str:
    """``${VAR:-./default}`` -> ``./default`` (what is mounted unless the operator says otherwise)."""
    match = re.fullmatch(r"\$\{[A-Z0-9_]+:-([^}]+)\}", source)
    return match.group(1) if match else source


def test_every_mounted_host_path_exists_or_is_documented_as_operator_provided() -> None:
    data = compose()
    docs = OPERATIONS.read_text() + (ROOT / "README.md").read_text()
    seen: set[str] = set()
    for name, service in data["services"].items():
        for volume in service.get("volumes", []):
            source = re.match(r"(\$\{[^}]*\}|[^:]+):", volume).group(1)  # type: ignore[union-attr]
            if not source.startswith(("./", "${")):
                assert volume.split(":", 1)[0] in data["volumes"], f"{name}: undeclared volume {volume}"
                continue
            path = _host_path(source)
            assert path.startswith("./"), f"{name}: {volume} must be relative to the compose file"
            seen.add(path)
            if path in OPERATOR_PROVIDED:
                assert path.removeprefix("./") in docs, f"{path} is not explained in the docs"
            else:
                assert (ROOT / path).exists(), f"{name}: {path} does not exist"
    assert set(OPERATOR_PROVIDED) <= seen
    for secret, spec in data["secrets"].items():
        assert spec["file"] == f"./secrets/{secret}"
        assert secret in (ROOT / "README.md").read_text(), f"README does not make secrets/{secret}"


def test_every_secret_a_service_uses_is_declared_and_no_secret_is_in_the_environment() -> None:
    data = compose()
    for name, service in data["services"].items():
        for secret in service.get("secrets", []):
            assert secret in data["secrets"], f"{name}: undeclared secret {secret}"
        for key, value in service.get("environment", {}).items():
            if re.search(r"PASSWORD|TOKEN|SECRET", key) and not key.endswith("_FILE"):
                pytest.fail(f"{name}: {key}={value} puts a secret in the environment; use a *_FILE secret")
            if key.endswith("_FILE") and str(value).startswith("/run/secrets/"):
                assert str(value).removeprefix("/run/secrets/") in service["secrets"], f"{name}: {key}"


def test_every_service_is_hardened_and_has_a_healthcheck() -> None:
    for name, service in compose()["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        assert service.get("cap_drop") == ["ALL"], name
        assert "cap_add" not in service, f"{name}: no service needs a capability"
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert service.get("deploy", {}).get("resources", {}).get("limits", {}).get("memory"), name
        user = str(service.get("user", ""))
        assert user and not user.startswith(("0", "root")), f"{name} must run as a non-root user"


def test_plain_mqtt_is_published_on_loopback_only() -> None:
    ports = compose()["services"]["mosquitto"]["ports"]
    plain = [p for p in ports if p.endswith(":1883")]
    assert plain and all(p.startswith("127.0.0.1:") for p in plain)
    assert any(p.endswith(":8883") for p in ports)
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:") or port.endswith(":8883"), f"{name}: {port} open to all"


def test_every_variable_the_compose_file_uses_is_documented() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    assert "OXYFLEET_INVENTORY_FILE" in used
    documented = (ROOT / "README.md").read_text().split("```dotenv\n", 1)[1].split("```", 1)[0]
    documented += (ROOT / ".env.example").read_text()
    missing = sorted(v for v in used if not re.search(rf"^#? ?{v}=", documented, re.MULTILINE))
    assert not missing, f"document these in README's .env block: {missing}"


def test_inventory_is_mounted_where_every_service_reads_it() -> None:
    for name in ("ingester", "health", "simulator"):
        service = compose()["services"][name]
        target = service["environment"].get("OXYFLEET_INVENTORY_FILE")
        assert target == "/etc/oxyfleet/inventory.csv", name
        assert f"${{OXYFLEET_INVENTORY_FILE:-./devices/inventory.csv}}:{target}:ro" in service["volumes"]


def test_the_influxdb_init_script_and_broker_entrypoint_are_executable_in_git() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-s", "docker/influxdb", "docker/mosquitto/entrypoint.sh"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    if not listed:
        pytest.skip("not a git checkout")
    for line in listed:
        mode, _sha, _stage, path = line.split(maxsplit=3)
        if path.endswith(".sh"):
            # run-parts in the influxdb image runs only executable scripts: a 0644 one would be skipped.
            assert mode == "100755", f"{path} is {mode}; git update-index --chmod=+x {path}"


def _runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = [Requirement(r) for r in project["project"]["dependencies"]]
    reqs += [Requirement(r) for r in project["build-system"]["requires"]]
    return reqs


def _locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\;]+)", LOCK.read_text(), re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def test_the_lock_pins_every_runtime_dependency_within_its_range() -> None:
    locked = _locked()
    for req in _runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in docker/requirements.lock: run scripts/lock"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"{req.name}=={locked[name]} does not satisfy {req.specifier}: run scripts/lock"
        )


def test_every_locked_package_carries_hashes() -> None:
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", LOCK.read_text())
    for block in blocks[1:]:
        assert "--hash=sha256:" in block, block.splitlines()[0]


def test_the_dockerfile_installs_the_lock_and_nothing_unpinned() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r /tmp/requirements.lock" in text
    installs = re.findall(r"pip install [^\n&]*", text)
    assert installs and all("--no-deps" in line for line in installs), installs
    assert re.search(r"^USER (?!0|root)", text, re.MULTILINE)


def test_the_build_context_keeps_every_package_and_its_data_and_drops_secrets(
    dockerignored: Callable[[str], bool],
) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools_cfg = project["tool"]["setuptools"]
    packages = {p.rstrip("*") for p in setuptools_cfg["packages"]["find"]["include"]}
    shipped = [
        "pyproject.toml",
        "README.md",
        "dashboards/json",
        "dashboards/provisioning",
        "devices/inventory.csv",
    ]
    shipped += sorted(packages)
    for package, files in setuptools_cfg.get("package-data", {}).items():
        shipped += [f"{package.replace('.', '/')}/{f}" for f in files]
    for path in shipped:
        assert (ROOT / path.split("*")[0]).exists() or "*" in path, path
        assert not dockerignored(path), f".dockerignore excludes {path}, which the image needs"
    for path in (
        ".env",
        "secrets/influxdb_admin_token",
        "secrets/mqtt/device-passwords.csv",
        ".git",
        ".venv",
    ):
        assert dockerignored(path), f"{path} would be sent to the Docker build"


def test_the_docker_datasource_is_the_shared_one_with_read_only_basic_auth() -> None:
    """Dashboards and alert rules refer to the datasource by uid: the Docker copy must not drift."""
    shared = yaml.safe_load(
        (ROOT / "dashboards" / "provisioning" / "datasources" / "oxyfleet.yaml").read_text()
    )
    docker = yaml.safe_load((ROOT / "docker" / "grafana" / "datasources" / "oxyfleet.yaml").read_text())
    (ours,), (theirs,) = docker["datasources"], shared["datasources"]
    for key in ("name", "uid", "type", "access", "isDefault", "editable"):
        assert ours[key] == theirs[key], key
    auth_only = {"httpHeaderName1"}
    assert {k: v for k, v in theirs["jsonData"].items() if k not in auth_only} == {
        **ours["jsonData"],
        "dbName": theirs["jsonData"]["dbName"],
    }
    assert ours["jsonData"]["dbName"] == "oxyfleet"
    assert ours["basicAuthUser"] == "oxyfleet-grafana"
    assert ours["secureJsonData"] == {"basicAuthPassword": "$__file{/run/secrets/influxdb_grafana_password}"}
    grafana = compose()["services"]["grafana"]
    assert "influxdb_grafana_password" in grafana["secrets"]
    assert "./docker/grafana/datasources:/etc/oxyfleet/provisioning/datasources:ro" in grafana["volumes"]
    role_script = (ROOT / "docker" / "influxdb" / "10-oxyfleet-roles.sh").read_text()
    assert "create oxyfleet-grafana influxdb_grafana_password --read-bucket" in role_script


def test_the_influxdb_first_start_script_creates_one_scoped_credential_per_role(tmp_path: Path) -> None:
    """The real script with a stand-in ``influx`` CLI that records its arguments (no InfluxDB 2.x here).

    What it checks is the script's part: which authorizations it asks for, with which permissions and
    which secret; the influx CLI flags themselves are those of ``influx v1 auth create`` (CLI 2.7).
    """
    bin_dir, secrets = tmp_path / "bin", tmp_path / "secrets"
    bin_dir.mkdir()
    secrets.mkdir()
    calls = tmp_path / "calls"
    stand_in = bin_dir / "influx"
    # `influx bucket create` prints the new bucket's row (id first); the rest prints nothing.
    stand_in.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$*" >> {calls}\n'
        '[ "$1" = bucket ] && printf "10n9\\toxyfleet/oxyfleet_long\\tinfinite\\n"\nexit 0\n'
    )
    stand_in.chmod(0o755)
    for role in ("ingester", "health", "grafana"):
        (secrets / f"influxdb_{role}_password").write_text(f"pw-{role}\n")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "OXYFLEET_SECRETS_DIR": str(secrets),
        "DOCKER_INFLUXDB_INIT_BUCKET_ID": "b0c4e7",
        "DOCKER_INFLUXDB_INIT_BUCKET": "oxyfleet",
        "DOCKER_INFLUXDB_INIT_ORG": "oxyfleet",
    }
    script = str(ROOT / "docker" / "influxdb" / "10-oxyfleet-roles.sh")
    done = subprocess.run([script], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    made = calls.read_text().splitlines()
    common = "v1 auth create --org oxyfleet --username"
    assert made == [
        "bucket create --org oxyfleet --name oxyfleet/oxyfleet_long --retention 0 --hide-headers",
        f"{common} oxyfleet-ingester --password pw-ingester --description oxyfleet oxyfleet-ingester --write-bucket b0c4e7",
        (
            f"{common} oxyfleet-health --password pw-health --description oxyfleet oxyfleet-health "
            "--read-bucket b0c4e7 --write-bucket b0c4e7 --read-bucket 10n9 --write-bucket 10n9"
        ),
        (
            f"{common} oxyfleet-grafana --password pw-grafana --description oxyfleet oxyfleet-grafana "
            "--read-bucket b0c4e7 --read-bucket 10n9"
        ),
    ]
    assert "pw-" not in done.stderr  # what it logs names roles and permissions, never a password
    (secrets / "influxdb_grafana_password").unlink()
    calls.unlink()
    done = subprocess.run([script], env=env, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 1
    assert "missing secret" in done.stderr and "influxdb_grafana_password" in done.stderr
    assert "oxyfleet-grafana" not in calls.read_text()  # stopped before creating it without a password
