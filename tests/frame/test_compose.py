"""docker-compose.yml and the Dockerfile, checked without a Docker engine."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from foundation import environment
from online_store.embedded import free_port
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


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("compose") / "secrets"
    subprocess.run(["sh", str(ROOT / "deploy" / "make-secrets.sh"), str(folder)], check=True)
    return folder


def secret_env(secrets: Path) -> dict[str, str]:
    """What deploy/secrets-env.sh (the image's entrypoint) exports from the secrets."""
    done = subprocess.run(
        ["sh", str(ROOT / "deploy" / "secrets-env.sh"), "env"],
        env={"SECRETS_DIR": str(secrets), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    pairs = (line.partition("=") for line in done.stdout.splitlines())
    return {k: v for k, _, v in pairs if k.startswith("FEATURESTORE_")}


@pytest.mark.parametrize("service", ["init", "featurestore"])
def test_services_that_touch_backends_get_both_urls_as_secrets(
    compose: dict[str, Any], secrets: Path, service: str
) -> None:
    mounted = compose["services"][service]["secrets"]
    assert set(mounted) == {"featurestore_redis_url", "featurestore_registry_url"}
    for name in mounted:
        assert (secrets / Path(compose["secrets"][name]["file"]).name).is_file()
    env = secret_env(secrets)
    assert env[environment.REGISTRY_ENV].startswith("postgresql+psycopg://featurestore:")
    assert "@postgres:5432/" in env[environment.REGISTRY_ENV]
    assert env[environment.REDIS_ENV].startswith("redis://featurestore:")
    assert env[environment.REDIS_ENV].endswith("@redis:6379/0")


def test_make_secrets_keeps_existing_passwords(secrets: Path) -> None:
    before = {f.name: f.read_text() for f in secrets.iterdir()}
    subprocess.run(["sh", str(ROOT / "deploy" / "make-secrets.sh"), str(secrets)], check=True)
    assert {f.name: f.read_text() for f in secrets.iterdir()} == before
    assert (secrets.stat().st_mode & 0o777) == 0o700


def test_no_password_is_written_in_the_compose_file_or_committed(
    compose: dict[str, Any], secrets: Path
) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for secret in secrets.iterdir():
        if "password" in secret.name:
            assert secret.read_text() not in text
    assert "POSTGRES_PASSWORD" not in compose["services"]["postgres"]["environment"]
    assert compose["services"]["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == (
        "/run/secrets/postgres_password"
    )
    for declared in compose["secrets"].values():
        assert declared["file"].startswith("./secrets/")
    assert "secrets/" in (ROOT / ".gitignore").read_text().splitlines()
    assert "secrets" in (ROOT / ".dockerignore").read_text().splitlines()


def test_compose_redis_refuses_clients_without_the_password(
    compose: dict[str, Any], secrets: Path, tmp_path: Path
) -> None:
    """The generated ACL file on a real redis-server, started as compose starts it."""
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--aclfile") + 1] == "/run/secrets/redis_users"
    assert compose["secrets"]["redis_users"]["file"] == "./secrets/redis_users.acl"
    assert "redis_users" in compose["services"]["redis"]["secrets"]
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(tmp_path), "--aclfile", str(secrets / "redis_users.acl")],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = secret_env(secrets)[environment.REDIS_ENV]
        service = redis.Redis.from_url(url.replace("@redis:6379", f"@127.0.0.1:{port}"))
        deadline = time.monotonic() + 10
        while True:
            try:
                assert service.set("feature", "ok")
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        stranger = redis.Redis(port=port)
        with pytest.raises(redis.AuthenticationError):
            stranger.set("feature", "rewritten")
        probe = redis.Redis(port=port, username="healthcheck", password="none")
        assert probe.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            probe.set("feature", "rewritten")
        assert service.get("feature") == b"ok"
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_service_requires_api_keys_and_never_runs_insecure(
    compose: dict[str, Any], secrets: Path
) -> None:
    service = compose["services"]["featurestore"]
    assert service["environment"]["FEATURESTORE_AUTH"] == "true"
    assert "--insecure" not in service["command"]
    variables = {**service["environment"], **secret_env(secrets)}
    settings = Settings(
        **{k.removeprefix("FEATURESTORE_").lower(): v for k, v in variables.items()}
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


def test_dockerfile_entrypoint_exports_the_mounted_secrets() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "COPY deploy/secrets-env.sh /usr/local/bin/featurestore-env" in text
    assert 'ENTRYPOINT ["featurestore-env"]' in text


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


def test_spark_profile_runs_materialize_on_a_spark_master(compose: dict[str, Any]) -> None:
    services = compose["services"]
    master, worker, job = (
        services["spark-master"],
        services["spark-worker"],
        services["spark-materialize"],
    )
    assert all(s["profiles"] == ["spark"] for s in (master, worker, job))
    assert master["image"].startswith("apache/spark:")
    assert "spark://spark-master:7077" in " ".join(worker["command"])
    # Worker and job run our code (the executors write with our writer), same Spark version.
    assert worker["build"]["dockerfile"] == job["build"]["dockerfile"] == "deploy/spark/Dockerfile"
    assert master["image"].split(":")[1] == worker["build"]["args"]["SPARK_VERSION"]
    assert job["environment"]["SPARK_MASTER_URL"] == "spark://spark-master:7077"
    yaml_path = job["environment"]["FEAST_FS_YAML_FILE_PATH"]
    spark_yaml = yaml.safe_load((ROOT / "feature_repo" / Path(yaml_path).name).read_text())
    assert spark_yaml["offline_store"]["type"] == "offline_store.spark.SparkOfflineStore"
    assert spark_yaml["batch_engine"]["type"] == "online_store.spark.SparkMaterializationEngine"
    assert spark_yaml["offline_store"]["spark_conf"]["spark.master"] == "${SPARK_MASTER_URL}"
    dockerfile = (ROOT / "deploy" / "spark" / "Dockerfile").read_text()
    assert "openjdk-17" in dockerfile
    assert 'pyspark==${SPARK_VERSION}"' in dockerfile
    assert dockerfile.splitlines()[-2] == "USER featurestore"
