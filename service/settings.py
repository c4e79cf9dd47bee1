"""Service settings: one pydantic-settings class, read from ``FEATURESTORE_*`` env vars.

The CLI (``featurestore serve``) passes its flags through these variables so that
every uvicorn worker process builds the same :class:`Settings` in
``service.app.create_app``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from foundation.environment import default_registry_url
from offline_store.sandbox import RequestLimits

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
# A DuckDB size such as "1GB", "512MiB" or "1.5 GB".
_DUCKDB_SIZE = re.compile(r"^\d+(\.\d+)?\s*(B|[KMGT]i?B)$", re.IGNORECASE)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine.

    Args:
        host: a host name or IP literal as given to ``--host``.

    Returns:
        True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1).
    """
    name = host.strip().strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Everything the HTTP service needs to start.

    Every field maps to ``FEATURESTORE_<FIELD>`` (e.g. ``FEATURESTORE_REDIS_URL``).
    """

    model_config = SettingsConfigDict(env_prefix="FEATURESTORE_", extra="ignore")

    repo_path: Path = Field(
        default=Path("feature_repo"), description="Feast repo holding feature_store.yaml."
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis to read/write; unset = the repo's online store config, "
        "else the embedded Redis under <repo>/data/redis.",
    )
    registry_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the SQL registry; unset = SQLite under <repo>/data/.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=6566, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    insecure: bool = Field(
        default=False, description="Allow binding a non-loopback host without auth."
    )
    auth: bool = Field(
        default=False,
        description="Require `Authorization: Bearer <API key>` (keys from "
        "`featurestore keys create`, stored hashed next to the registry).",
    )
    api_key_cache_seconds: float = Field(
        default=5.0, ge=0, description="How long a verified key is trusted without a DB read."
    )
    registry_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Bound on each registry read (refresh, API key lookup)."
    )
    environment: Literal["development", "production"] = "development"
    registry_refresh_seconds: float = Field(
        default=5.0,
        gt=0,
        le=10,
        description="How often the registry is re-read in the background (<= 10 s).",
    )
    max_entities_per_request: int = Field(default=10_000, ge=1)
    max_features_per_request: int = Field(default=1_000, ge=1)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    max_push_rows: int = Field(default=100_000, ge=1)
    max_header_bytes: int = Field(
        default=32 * 1024,
        ge=1024,
        description="Request line plus headers; a larger head is answered 431 and closed.",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A request head must arrive within this time, else 408 and closed.",
    )
    keepalive_timeout_seconds: int = Field(
        default=5, ge=1, description="Idle keep-alive connections are closed after this."
    )
    max_connections: int = Field(
        default=4096,
        ge=1,
        description="Open connections per worker; more are answered 503 and closed.",
    )
    lookup_shortcut: bool = Field(
        default=True,
        description="Answer POST /get-online-features in front of FastAPI (faster); false "
        "sends lookups through FastAPI's stack, e.g. to have its telemetry trace them.",
    )
    redis_timeout_seconds: float = Field(default=2.0, gt=0)
    redis_max_connections: int = Field(default=64, ge=1)
    odfv_threads: int = Field(
        default=4,
        ge=1,
        le=256,
        description="Threads per worker that run on-demand transformations, apart from "
        "other work (API-key checks, registry reloads, /ready); when all are busy, further "
        "on-demand lookups wait for one.",
    )
    materialize_max_jobs: int = Field(
        default=2, ge=1, description="Materialization jobs running at once per worker."
    )
    materialize_lock_ttl_seconds: float = Field(
        default=30.0,
        ge=0.5,
        description="Expiry of a view's materialization lock; refreshed every third of it "
        "from submit to finish, so only a dead worker's locks lapse.",
    )
    max_future_skew_seconds: float = Field(
        default=300.0,
        ge=0,
        description="Writes (push, write-to-online-store) with event times, and "
        "materialization windows ending, more than this ahead of the server clock are "
        "refused (422).",
    )
    training_memory_limit: str = Field(
        default="1GB",
        description="DuckDB memory limit of each /training-dataset request; beyond it the "
        "request spills, and past the spill limit it is cancelled with 413.",
    )
    training_threads: int = Field(
        default=2, ge=1, le=256, description="DuckDB threads of each /training-dataset request."
    )
    training_timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Wall clock of each /training-dataset request, streaming included; "
        "past it the query is interrupted (408 before the first byte, a cut stream after).",
    )
    training_max_temp_size: str = Field(
        default="10GB",
        description="Most each /training-dataset request may spill to DuckDB's temp directory.",
    )
    training_max_concurrent: int = Field(
        default=2,
        ge=1,
        le=64,
        description="/training-dataset requests running at once per worker (streaming "
        "included); more are answered 503 service_busy with Retry-After.",
    )
    max_training_entity_rows: int = Field(
        default=1_000_000, ge=1, description="Most entity rows per /training-dataset request."
    )
    max_training_upload_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="Most bytes uploaded Arrow IPC entity rows may decode (decompress) to.",
    )
    drift_psi_threshold: float = Field(
        default=0.2,
        gt=0,
        description="Population stability index at or above which a saved training dataset's "
        "feature counts as drifted from the latest data (console, /statistics/drift).",
    )
    statistics_push_window_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Statistics of pushed rows are profiled as they are written and stored "
        "as one run per feature view this often; the drift gauge is recomputed as often.",
    )
    entity_dir: Path | None = Field(
        default=None,
        description="Directory whose Parquet files /training-dataset may read as entity rows "
        '(JSON "entity_path"); unset = server paths are refused.',
    )

    @field_validator("training_memory_limit", "training_max_temp_size")
    @classmethod
    def _duckdb_size(cls, value: str) -> str:
        if not _DUCKDB_SIZE.match(value.strip()):
            raise ValueError(f"{value!r} is not a size DuckDB accepts; write e.g. 1GB or 512MB")
        return value.strip()

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if not is_loopback(self.host) and not (self.auth or self.insecure):
            raise ValueError(
                f"refusing to bind non-loopback host {self.host!r} without authentication; "
                "bind 127.0.0.1, turn on API keys with --auth (FEATURESTORE_AUTH=true), "
                "or pass --insecure (FEATURESTORE_INSECURE=true) if this network is trusted"
            )
        if self.environment == "production" and (not self.redis_url or not self.registry_url):
            raise ValueError(
                "environment=production needs an explicit Redis and registry: set "
                "FEATURESTORE_REDIS_URL and FEATURESTORE_REGISTRY_URL (the embedded Redis "
                "and SQLite registry are for development only)"
            )
        return self

    def resolved_repo_path(self) -> Path:
        """The repo path made absolute (workers may not share the parent's cwd assumptions)."""
        return self.repo_path.expanduser().resolve()

    def training_limits(self) -> RequestLimits:
        """The limits every /training-dataset request runs within."""
        return RequestLimits(
            memory_limit=self.training_memory_limit,
            threads=self.training_threads,
            timeout_seconds=self.training_timeout_seconds,
            max_entity_rows=self.max_training_entity_rows,
            max_temp_size=self.training_max_temp_size,
        )

    def resolved_registry_url(self) -> str:
        """The registry URL to use, defaulting to SQLite under ``<repo>/data/registry.db``."""
        return self.registry_url or default_registry_url(self.resolved_repo_path())
