"""docker-compose.yml's `airflow` profile, checked without a Docker engine."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = {
    "airflow-postgres",
    "airflow-init",
    "airflow-apiserver",
    "airflow-dag-processor",
    "airflow-scheduler",
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_airflow_services_only_start_with_the_airflow_profile(compose: dict[str, Any]) -> None:
    profiled = {n for n, s in compose["services"].items() if "airflow" in s.get("profiles", [])}
    assert profiled == AIRFLOW_SERVICES
    for name in ("redis", "postgres", "init", "featurestore"):
        assert "profiles" not in compose["services"][name]


def test_airflow_keeps_its_metadata_in_its_own_postgres_from_secrets(
    compose: dict[str, Any],
) -> None:
    db = compose["services"]["airflow-postgres"]
    assert db["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/airflow_postgres_password"
    assert db["volumes"][0].split(":")[0] in compose["volumes"]
    for name in AIRFLOW_SERVICES - {"airflow-postgres"}:
        env = compose["services"][name]["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD"] == "cat /run/secrets/airflow_db_url"
        assert "airflow_db_url" in compose["services"][name]["secrets"]
        assert not any("postgresql" in str(v) for v in env.values())


def test_scheduler_runs_tasks_against_the_store_after_it_is_initialised(
    compose: dict[str, Any],
) -> None:
    scheduler = compose["services"]["airflow-scheduler"]
    assert {"featurestore_redis_url", "featurestore_registry_url"} <= set(scheduler["secrets"])
    assert "repo-data:/app/feature_repo/data" in scheduler["volumes"]
    assert scheduler["environment"]["FEATURESTORE_REPO_PATH"] == "/app/feature_repo"
    assert scheduler["environment"]["AIRFLOW__CORE__DAGS_FOLDER"] == "/app/pipelines/airflow_dags"
    assert scheduler["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert scheduler["depends_on"]["airflow-init"]["condition"] == (
        "service_completed_successfully"
    )
    assert compose["services"]["airflow-init"]["command"] == ["airflow", "db", "migrate"]
    assert compose["services"]["airflow-apiserver"]["ports"] == ["127.0.0.1:8080:8080"]
    assert scheduler["image"] == "featurestore-pipelines-python:0.1.0"
    assert scheduler["build"]["dockerfile"] == "pipelines/Dockerfile"


def test_make_secrets_writes_the_airflow_secrets(tmp_path: Path, compose: dict[str, Any]) -> None:
    folder = tmp_path / "secrets"
    subprocess.run(["sh", str(ROOT / "deploy" / "make-secrets.sh"), str(folder)], check=True)
    for name in ("airflow_postgres_password", "airflow_db_url", "airflow_jwt_secret"):
        assert (folder / Path(compose["secrets"][name]["file"]).name).read_text()
    password = (folder / "airflow_postgres_password").read_text()
    assert (folder / "airflow_db_url").read_text() == (
        f"postgresql+psycopg://airflow:{password}@airflow-postgres:5432/airflow"
    )
