"""Lookups racing a materialization never see a half-written row.

Every row of version v has all eight features equal to v. While `feast materialize`
writes versions 2 and 3 over 50k drivers, the service answers lookups in a loop;
each looked-up entity must carry one version in all its features (a torn row would mix
two). The test also checks that the lookups really overlapped the writes: some lookup
saw different entities at different versions.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

from service.app import create_app
from service.settings import Settings
from tests.reliability.versioned import FEATURES, window, write_versioned_repo
from tests.service.conftest import AppClient, feast_cli

DRIVERS = 50_000


def test_lookups_during_materialize_never_see_a_torn_row(tmp_path: Path, redis_url: str) -> None:
    repo = tmp_path / "repo"
    registry = write_versioned_repo(repo, redis_url, drivers=DRIVERS)
    feast_cli(repo, redis_url, registry, "apply")
    feast_cli(repo, redis_url, registry, "materialize", *window(1))

    settings = Settings(repo_path=repo, redis_url=redis_url, registry_url=registry)
    app = AppClient(create_app(settings))
    done = threading.Event()
    torn: list[dict[str, list[int]]] = []
    seen_versions: set[int] = set()
    mixed_reads = 0
    reads = 0

    def read_loop() -> None:
        nonlocal mixed_reads, reads
        rng = random.Random(3)
        while not done.is_set():
            ids = rng.sample(range(1, DRIVERS + 1), 200)
            body = app.post(
                "/get-online-features",
                json={"features": [f"race:{n}" for n in FEATURES], "entities": {"driver_id": ids}},
            ).json()
            by_name = dict(zip(body["metadata"]["feature_names"], body["results"], strict=True))
            versions_in_read = set()
            for row in range(len(ids)):
                values = {by_name[n]["values"][row] for n in FEATURES}
                if len(values) != 1:
                    torn.append({"driver_id": [ids[row]], "values": sorted(values)})
                versions_in_read |= values
            seen_versions.update(versions_in_read)
            mixed_reads += len(versions_in_read) > 1
            reads += 1

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for version in (2, 3):
            feast_cli(repo, redis_url, registry, "materialize", *window(version))
    finally:
        done.set()
        reader.join(timeout=60)
        app.close()

    assert torn == []
    assert seen_versions >= {1, 3}
    assert reads > 20
    assert mixed_reads > 0, "no lookup overlapped a write; the race was not exercised"
