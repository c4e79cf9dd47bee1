"""API keys with scopes, stored hashed in SQL next to the Feast registry.

A key looks like ``fsk_<key id>_<secret>``. Only the key id and the SHA-256 of the
secret are stored: the secret is 256 random bits, so a fast hash is not reversible
in practice, and lookups by key id keep verification to one indexed read. Secrets
are compared with :func:`hmac.compare_digest` and never logged.

Scopes are ordered: ``admin`` can do everything ``write`` can, which can do
everything ``read`` can.

    read   online lookups, training datasets, registry browsing
    write  push, write-to-online-store
    admin  materialize, key management
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from service.environment import sqlalchemy_url
from service.errors import (
    AuthenticationError,
    BackendUnavailableError,
    NotFoundError,
    PermissionDeniedError,
)
from service.schema import upgrade_schema

VERSION_TABLE = "featurestore_service_alembic_version"
_PREFIX = "fsk"


class Scope(enum.IntEnum):
    """What a key may do; a higher scope includes the lower ones."""

    READ = 1
    WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, value: str) -> Scope:
        try:
            return cls[value.upper()]
        except KeyError:
            raise ValueError(f"unknown scope {value!r}; use read, write or admin") from None


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "featurestore_api_keys"

    key_id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    secret_sha256: Mapped[str] = mapped_column(sa.String(64))
    scope: Mapped[str] = mapped_column(sa.String(16))
    name: Mapped[str] = mapped_column(sa.String(200), server_default="")
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(sa.DateTime(timezone=True), nullable=True)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as listed: never the secret."""

    key_id: str
    scope: Scope
    name: str
    created_at: datetime
    revoked: bool


def upgrade(engine: sa.Engine) -> None:
    """Create or migrate the service's tables in ``engine``'s database."""
    upgrade_schema(engine, Path(__file__).with_name("migrations"))


def open_key_engine(url: str, timeout_seconds: float) -> sa.Engine:
    """An engine on the registry database for key lookups, with bounded waits.

    Creates the key table if needed (migrations are idempotent).
    """
    url = sqlalchemy_url(url)
    connect_args: dict[str, object] = {}
    if url.startswith("postgresql"):
        connect_args["connect_timeout"] = max(1, int(timeout_seconds))
    elif url.startswith("sqlite"):
        connect_args["timeout"] = timeout_seconds
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    upgrade(engine)
    return engine


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(key: str) -> tuple[str, str]:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != _PREFIX or not parts[1] or not parts[2]:
        raise AuthenticationError(
            "malformed API key; send `Authorization: Bearer fsk_<id>_<secret>` with a key "
            "from `featurestore keys create`"
        )
    return parts[1], parts[2]


class KeyStore:
    """Create, revoke, list and verify keys.

    Args:
        engine: SQLAlchemy engine of the registry database.
        cache_seconds: how long a verified key is trusted without a database read;
            a revocation takes effect within this time.
    """

    def __init__(self, engine: sa.Engine, *, cache_seconds: float = 5.0) -> None:
        self.engine = engine
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[Scope | None, float]] = {}
        self._lock = threading.Lock()

    def create(self, scope: Scope, *, name: str = "") -> str:
        """Store a new key and return it; this is the only time the secret is seen."""
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        with Session(self.engine) as session, session.begin():
            session.add(
                ApiKey(
                    key_id=key_id,
                    secret_sha256=_digest(secret),
                    scope=scope.name.lower(),
                    name=name,
                    created_at=datetime.now(UTC),
                )
            )
        return f"{_PREFIX}_{key_id}_{secret}"

    def revoke(self, key_id: str) -> None:
        """Revoke a key by its id (the part after ``fsk_``).

        Raises:
            NotFoundError: no such key.
        """
        with Session(self.engine) as session, session.begin():
            row = session.get(ApiKey, key_id)
            if row is None:
                raise NotFoundError(
                    f"no API key with id {key_id!r}; `featurestore keys list` shows the ids"
                )
            row.revoked_at = row.revoked_at or datetime.now(UTC)
        with self._lock:
            self._cache.clear()

    def list(self) -> list[KeyInfo]:
        """Every key, newest first, without secrets."""
        with Session(self.engine) as session:
            rows = session.scalars(sa.select(ApiKey).order_by(ApiKey.created_at.desc())).all()
            return [
                KeyInfo(
                    r.key_id, Scope.parse(r.scope), r.name, r.created_at, r.revoked_at is not None
                )
                for r in rows
            ]

    def peek(self, key: str) -> Scope | None:
        """The scope of ``key`` if a fresh cache entry vouches for it; no database read.

        Raises:
            AuthenticationError: the cache knows the key is invalid.
        """
        with self._lock:
            cached = self._cache.get(_digest(key))
        if cached is None or cached[1] <= time.monotonic():
            return None
        return _valid(cached[0])

    def verify(self, key: str) -> Scope:
        """The scope of a valid, unrevoked key (cached for ``cache_seconds``).

        When the database cannot be reached, a key verified earlier keeps working
        with its last known scope, so a registry outage does not lock clients out.

        Raises:
            AuthenticationError: malformed, unknown or revoked key.
            BackendUnavailableError: the database is unreachable and the key was
                never verified by this process.
        """
        cache_key = _digest(key)
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(cache_key)
        if cached is not None and cached[1] > now:
            return _valid(cached[0])
        try:
            scope = self._lookup(key)
        except sa.exc.SQLAlchemyError as exc:
            if cached is not None:
                return _valid(cached[0])
            raise BackendUnavailableError(
                "cannot verify the API key: the registry database is unreachable "
                f"({type(exc).__name__}); retry shortly"
            ) from exc
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[cache_key] = (scope, now + self.cache_seconds)
        return _valid(scope)

    def _lookup(self, key: str) -> Scope | None:
        key_id, secret = _split(key)
        with Session(self.engine) as session:
            row = session.get(ApiKey, key_id)
        # Compare even when the id is unknown so timing does not reveal which ids exist.
        expected = row.secret_sha256 if row is not None else "0" * 64
        matches = hmac.compare_digest(expected, _digest(secret))
        if row is None or not matches or row.revoked_at is not None:
            return None
        return Scope.parse(row.scope)


def _valid(scope: Scope | None) -> Scope:
    if scope is None:
        raise AuthenticationError(
            "invalid or revoked API key; create one with "
            "`featurestore keys create --scope read|write|admin`"
        )
    return scope


class Authenticator:
    """Checks ``Authorization: Bearer <key>`` headers against a :class:`KeyStore`.

    Args:
        store: where keys live.
        timeout: seconds a database verification may take before a 503.
    """

    def __init__(self, store: KeyStore, *, timeout: float) -> None:
        self.store = store
        self.timeout = timeout

    async def authorize(self, authorization: str | None, required: Scope) -> Scope:
        """The caller's scope, if it is at least ``required``.

        Raises:
            AuthenticationError: no key, not a bearer key, or an invalid key (401).
            PermissionDeniedError: a valid key with a lower scope (403).
            BackendUnavailableError: the key could not be checked in time (503).
        """
        scheme, _, key = (authorization or "").strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise AuthenticationError(
                "missing API key; send `Authorization: Bearer <key>` with a key from "
                "`featurestore keys create --scope read|write|admin`"
            )
        scope = self.store.peek(key)
        if scope is None:
            try:
                scope = await asyncio.wait_for(
                    asyncio.to_thread(self.store.verify, key), self.timeout
                )
            except TimeoutError:
                raise BackendUnavailableError(
                    f"cannot verify the API key within {self.timeout:g} s: the registry "
                    "database is slow or unreachable; retry shortly"
                ) from None
        if scope < required:
            need = required.name.lower()
            raise PermissionDeniedError(
                f"this API key has scope {scope.name.lower()!r} but this endpoint needs "
                f"{need!r}; use a key from `featurestore keys create --scope {need}`",
                scope=scope.name.lower(),
                required=need,
            )
        return scope
