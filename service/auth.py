"""API keys with scopes, one Feast project each, stored hashed in SQL next to the registry.

A key looks like ``fsk_<key id>_<secret>``. Only the key id and the SHA-256 of the
secret are stored: the secret is 256 random bits, so a fast hash is not reversible
in practice. Secrets are compared with :func:`hmac.compare_digest` and never logged.

A key belongs to the project it was created for; a service of another project on the
same registry database refuses it, lists it nowhere and cannot revoke it.

Scopes are ordered: ``admin`` can do everything ``write`` can, which can do
everything ``read`` can.

    read   online lookups, training datasets, registry browsing, /ready details
    write  push, write-to-online-store
    admin  materialize, key management

Verification never costs a database read per request: a :class:`KeyStore` keeps a
snapshot of its project's keys (ids, digests, scopes), re-read when older than
``cache_seconds``. A key id missing from the snapshot triggers at most one re-read per
second, so a flood of made-up keys is answered from memory.
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

from foundation.environment import sqlalchemy_url
from foundation.errors import (
    AuthenticationError,
    BackendUnavailableError,
    NotFoundError,
    PermissionDeniedError,
)
from foundation.migrations import upgrade_schema

VERSION_TABLE = "featurestore_service_alembic_version"
_PREFIX = "fsk"
# An id missing from a fresh snapshot re-reads the table at most this often.
_UNKNOWN_ID_REREAD_SECONDS = 1.0


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
    # NULL for keys made before keys had a project: they are refused until recreated.
    project: Mapped[str | None] = mapped_column(sa.String(200), nullable=True, index=True)


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as listed: never the secret."""

    key_id: str
    scope: Scope
    name: str
    created_at: datetime
    revoked: bool


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The project's active keys as of ``read_at`` (monotonic): id -> (digest, scope)."""

    keys: dict[str, tuple[str, Scope]]
    read_at: float


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


def _refused() -> AuthenticationError:
    return AuthenticationError(
        "invalid or revoked API key, or a key of another project; create one with "
        "`featurestore keys create --scope read|write|admin --repo <this project's repo>`"
    )


class KeyStore:
    """Create, revoke, list and verify the keys of one project.

    Args:
        engine: SQLAlchemy engine of the registry database.
        project: the Feast project the keys belong to.
        cache_seconds: how old the in-memory snapshot of keys may get before a request
            re-reads it; a revocation elsewhere takes effect within this time.
    """

    def __init__(self, engine: sa.Engine, *, project: str, cache_seconds: float = 5.0) -> None:
        self.engine = engine
        self.project = project
        self.cache_seconds = cache_seconds
        self._snapshot: _Snapshot | None = None
        self._reload = threading.Lock()

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
                    project=self.project,
                )
            )
        self._snapshot = None
        return f"{_PREFIX}_{key_id}_{secret}"

    def revoke(self, key_id: str) -> None:
        """Revoke a key of this project by its id (the part after ``fsk_``).

        Raises:
            NotFoundError: no such key in this project.
        """
        with Session(self.engine) as session, session.begin():
            row = session.get(ApiKey, key_id)
            if row is None or row.project != self.project:
                raise NotFoundError(
                    f"no API key with id {key_id!r} in project {self.project!r}; "
                    "`featurestore keys list` shows the ids"
                )
            row.revoked_at = row.revoked_at or datetime.now(UTC)
        self._snapshot = None

    def list(self) -> list[KeyInfo]:
        """Every key of this project, newest first, without secrets."""
        query = (
            sa.select(ApiKey)
            .where(ApiKey.project == self.project)
            .order_by(ApiKey.created_at.desc())
        )
        with Session(self.engine) as session:
            return [
                KeyInfo(
                    r.key_id, Scope.parse(r.scope), r.name, r.created_at, r.revoked_at is not None
                )
                for r in session.scalars(query).all()
            ]

    def peek(self, key: str) -> Scope | None:
        """The scope of ``key`` from the in-memory snapshot, if it can tell; no I/O.

        Returns:
            The key's scope, or None when the snapshot is too old to decide.

        Raises:
            AuthenticationError: malformed key, or the snapshot knows the key is not valid.
        """
        key_id, secret = _split(key)
        snapshot = self._snapshot
        if snapshot is None:
            return None
        age = time.monotonic() - snapshot.read_at
        entry = snapshot.keys.get(key_id)
        if age >= self.cache_seconds and entry is not None:
            return None
        if entry is None:
            if age >= _UNKNOWN_ID_REREAD_SECONDS or age >= self.cache_seconds:
                return None  # maybe created since the snapshot: re-read first
            raise _refused()
        return _check(entry, secret)

    def verify(self, key: str) -> Scope:
        """The scope of a valid, unrevoked key of this project.

        Re-reads the key table when the snapshot cannot decide (see :meth:`peek`). When
        the database cannot be reached, the last snapshot keeps deciding, so a registry
        outage does not lock clients out.

        Raises:
            AuthenticationError: malformed, unknown, revoked, or another project's key.
            BackendUnavailableError: the database is unreachable and the key is not in
                the last snapshot (or there is none).
        """
        scope = self.peek(key)
        if scope is not None:
            return scope
        key_id, secret = _split(key)
        stale = self._snapshot
        with self._reload:
            current = self._snapshot
            if current is None or current is stale:
                try:
                    current = self._read()
                except sa.exc.SQLAlchemyError as exc:
                    if stale is not None and key_id in stale.keys:
                        return _check(stale.keys[key_id], secret)
                    raise BackendUnavailableError(
                        "cannot verify the API key: the registry database is unreachable "
                        f"({type(exc).__name__}); retry shortly"
                    ) from exc
                self._snapshot = current
        entry = current.keys.get(key_id)
        if entry is None:
            # Compare anyway so timing does not tell which ids exist.
            hmac.compare_digest("0" * 64, _digest(secret))
            raise _refused()
        return _check(entry, secret)

    def _read(self) -> _Snapshot:
        query = sa.select(ApiKey.key_id, ApiKey.secret_sha256, ApiKey.scope).where(
            ApiKey.project == self.project, ApiKey.revoked_at.is_(None)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        keys = {str(r[0]): (str(r[1]), Scope.parse(str(r[2]))) for r in rows}
        return _Snapshot(keys, time.monotonic())


def _check(entry: tuple[str, Scope], secret: str) -> Scope:
    if not hmac.compare_digest(entry[0], _digest(secret)):
        raise _refused()
    return entry[1]


def _bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header, None for anything else."""
    scheme, _, key = (authorization or "").strip().partition(" ")
    key = key.strip()
    return key if scheme.lower() == "bearer" and key else None


class Authenticator:
    """Checks ``Authorization: Bearer <key>`` headers against a :class:`KeyStore`.

    Args:
        store: where keys live.
        timeout: seconds a database verification may take before a 503.
    """

    def __init__(self, store: KeyStore, *, timeout: float) -> None:
        self.store = store
        self.timeout = timeout

    def peek(self, authorization: str | None) -> Scope | None:
        """The caller's scope when the in-memory snapshot vouches for the key, else None."""
        key = _bearer_key(authorization)
        if key is None:
            return None
        try:
            return self.store.peek(key)
        except AuthenticationError:
            return None

    async def authorize(self, authorization: str | None, required: Scope) -> Scope:
        """The caller's scope, if it is at least ``required``.

        Raises:
            AuthenticationError: no key, not a bearer key, or an invalid key (401).
            PermissionDeniedError: a valid key with a lower scope (403).
            BackendUnavailableError: the key could not be checked in time (503).
        """
        key = _required_key(authorization)
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
        return _at_least(scope, required)

    def authorize_blocking(self, authorization: str | None, required: Scope) -> Scope:
        """:meth:`authorize` for threads that may block (the Arrow Flight server).

        Raises:
            AuthenticationError, PermissionDeniedError, BackendUnavailableError: as
                :meth:`authorize`.
        """
        return _at_least(self.store.verify(_required_key(authorization)), required)


def _required_key(authorization: str | None) -> str:
    key = _bearer_key(authorization)
    if key is None:
        raise AuthenticationError(
            "missing API key; send `Authorization: Bearer <key>` with a key from "
            "`featurestore keys create --scope read|write|admin`"
        )
    return key


def _at_least(scope: Scope, required: Scope) -> Scope:
    if scope < required:
        need = required.name.lower()
        raise PermissionDeniedError(
            f"this API key has scope {scope.name.lower()!r} but this endpoint needs "
            f"{need!r}; use a key from `featurestore keys create --scope {need}`",
            scope=scope.name.lower(),
            required=need,
        )
    return scope
