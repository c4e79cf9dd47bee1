"""docker-compose.yml and the Dockerfile, checked without a Docker engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from service import environment
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_file_matches_the_compose_specification() -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "check_jsonschema",
            "--builtin-schema", "vendor.compose-spec",
            str(ROOT / "docker-compose.yml"),
        ],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_compose_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  redis:\n    image: redis\n    ports: 6379\n    bogus_key: 1\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(broken),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0


@pytest.mark.parametrize("service", ["init", "featurestore"])
def test_services_that_touch_backends_get_both_urls(compose: dict[str, Any], service: str) -> None:
    env = compose["services"][service]["environment"]
    assert env[environment.REGISTRY_ENV].startswith("postgresql+psycopg://")
    assert "@postgres:5432/" in env[environment.REGISTRY_ENV]
    assert env[environment.REDIS_ENV] == "redis://redis:6379/0"


def test_service_requires_api_keys_and_never_runs_insecure(compose: dict[str, Any]) -> None:
    service = compose["services"]["featurestore"]
    assert service["environment"]["FEATURESTORE_AUTH"] == "true"
    assert "--insecure" not in service["command"]
    settings = Settings(
        **{k.removeprefix("FEATURESTORE_").lower(): v for k, v in service["environment"].items()}
        | {"host": service["command"][service["command"].index("--host") + 1]}
    )
    assert settings.auth
    assert settings.environment == "production"


def test_service_waits_for_healthy_backends_and_a_finished_init(compose: dict[str, Any]) -> None:
    depends = compose["services"]["featurestore"]["depends_on"]
    assert depends["redis"]["condition"] == "service_healthy"
    assert depends["postgres"]["condition"] == "service_healthy"
    assert depends["init"]["condition"] == "service_completed_successfully"
    assert "healthcheck" in compose["services"]["redis"]
    assert "healthcheck" in compose["services"]["postgres"]


def test_redis_persists_with_aof_on_a_named_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    volume = redis["volumes"][0].split(":")[0]
    assert volume in compose["volumes"]
    pg_volume = compose["services"]["postgres"]["volumes"][0].split(":")[0]
    assert pg_volume in compose["volumes"]


def test_init_applies_and_materializes(compose: dict[str, Any]) -> None:
    init = compose["services"]["init"]
    script = " ".join(init["command"])
    assert "feast apply" in script
    assert "feast materialize" in script
    assert init["restart"] == "no"


def test_dockerfile_runs_as_non_root_from_a_slim_base() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert bases
    assert all("slim" in base for base in bases)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in ("root", "0")
    # Only runtime dependencies: the final stage installs the wheel without extras.
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    assert not any("[dev]" in line for line in final)
