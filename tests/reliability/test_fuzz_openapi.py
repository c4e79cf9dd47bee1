"""Schemathesis against the live service's OpenAPI document, auth on: no 5xx anywhere.

A real `featurestore serve --auth` process on loopback, its own repo and Redis (the
fuzzer may push, materialize and create keys), an admin key on every request so the
fuzzer reaches the handlers behind the scope checks. Every operation in the document
gets `FUZZ_EXAMPLES` generated cases (Hypothesis, derandomized so CI is repeatable).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from online_store.embedded import EmbeddedRedis, free_port
from service.auth import KeyStore, Scope, open_key_engine
from tests.service.conftest import build_repo

FUZZ_EXAMPLES = int(os.environ.get("FEATURESTORE_FUZZ_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("fuzz")
    redis_server = EmbeddedRedis(root / "redis", persistent=False)
    redis_server.start()
    repo = build_repo(
        root / "repo", registry_url=f"sqlite:///{root / 'registry.db'}", redis_url=redis_server.url
    )
    engine = open_key_engine(repo.registry_url, 5)
    admin = KeyStore(engine, project="rides").create(Scope.ADMIN, name="fuzzer")
    engine.dispose()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEATURESTORE_")}
    env.update(FEATURESTORE_REDIS_URL=redis_server.url, FEATURESTORE_REGISTRY_URL=repo.registry_url)
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "featurestore"), "serve", "--auth",
         "--repo", str(repo.path), "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (root / "server.log").read_text()
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "service never became ready"
            time.sleep(0.2)
        yield url, admin
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        redis_server.stop()
        server_log = (root / "server.log").read_text()
        assert admin.split("_", 2)[2] not in server_log


def test_every_operation_survives_fuzzing_without_server_errors(live: tuple[str, str]) -> None:
    url, admin = live
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    headers = {"Authorization": f"Bearer {admin}"}
    cases = 0
    operations = 0
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=FUZZ_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            nonlocal cases
            cases += 1
            response = case.call(base_url=url, headers=headers, timeout=60)
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except AssertionError as exc:  # collect all, report together
                failures.append(f"{case.method} {case.path}: {exc}")

        run()
    print(f"schemathesis: {operations} operations, {cases} cases, {len(failures)} server errors")
    assert operations >= 20
    assert cases >= operations * min(FUZZ_EXAMPLES, 5)
    assert failures == []
