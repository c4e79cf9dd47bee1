"""Entity rows from untrusted callers: the entity SQL sandbox, confined paths, request limits.

The HTTP service hands the offline store an :class:`UntrustedEntities` instead of a plain
entity source; the in-process SDK never does, and keeps its full power (any SQL, any path).
Untrusted rows are held in by two independent layers:

1. **Parsing.** Entity SQL is parsed by DuckDB's own parser before anything runs: exactly one
   statement, of type SELECT; every relation it reads is one of the registered offline views,
   one of its own CTEs, or a table function that touches no file (``range``,
   ``generate_series``, ``unnest``). This is an allow list over DuckDB's parse tree, not
   string matching.
2. **The engine.** The connection it runs on is locked down after the views are registered:
   ``enable_external_access = false`` with ``allowed_paths`` set to exactly the Parquet files
   of those views (and of a confined entity path), extension autoload and autoinstall off,
   and ``lock_configuration = true`` so the query cannot undo any of it. Even SQL that got
   past layer 1 could read no other file, write nothing, attach nothing and load nothing.

Limits (memory, threads, spill size, wall clock, entity rows) come with the rows in
:class:`RequestLimits`; :class:`Watchdog` interrupts a query that runs past its time.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa

from foundation.errors import EntityPathRefusedError, EntitySqlRefusedError
from offline_store.sources import execute, quote_literal

# Table functions that compute rows without touching a file, a URL or the catalog.
PURE_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
# Parse-tree table reference kinds that only combine other references or literal rows.
_COMBINING_REFS = frozenset({"SUBQUERY", "JOIN", "EXPRESSION_LIST", "EMPTY", "EMPTY_FROM", "PIVOT"})
_ENTITY_DIR_SETTING = "FEATURESTORE_ENTITY_DIR"


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What one untrusted training request may use (the service's ``training_*`` settings).

    Attributes:
        memory_limit: DuckDB ``memory_limit`` of the request's connection.
        threads: DuckDB worker threads.
        timeout_seconds: wall clock from opening the connection to the last batch streamed.
        max_entity_rows: the most entity rows one request may have.
        max_temp_size: the most the request may spill to the temp directory.
    """

    memory_limit: str = "1GB"
    threads: int = 2
    timeout_seconds: float = 300.0
    max_entity_rows: int = 1_000_000
    max_temp_size: str = "10GB"


@dataclass(frozen=True, slots=True)
class SandboxedSql:
    """An entity query from an untrusted caller, known to be exactly one SELECT statement.

    Build it with :meth:`parse`; which views it may read is checked by :func:`check_relations`
    once the requested views are known.
    """

    sql: str

    @classmethod
    def parse(cls, text: str) -> SandboxedSql:
        """Accept ``text`` only if DuckDB parses it as exactly one SELECT statement.

        Args:
            text: the caller's SQL.

        Returns:
            The checked query.

        Raises:
            EntitySqlRefusedError: not SQL, several statements, or not a SELECT.
        """
        try:
            statements = duckdb.extract_statements(text)
        except duckdb.Error as exc:
            raise EntitySqlRefusedError(
                f"entity_sql is not SQL ({_first_line(exc)}); send one SELECT over the "
                "offline views, or the entity rows as Arrow IPC (to read a Parquet file on "
                f"the server, send entity_path, which needs {_ENTITY_DIR_SETTING})",
            ) from exc
        kinds = [s.type.name for s in statements]
        if kinds != ["SELECT"]:
            raise EntitySqlRefusedError(
                f"entity_sql must be exactly one SELECT query over the offline views; got "
                f"{len(kinds)} statement(s) of type {', '.join(kinds) or 'none'}",
                statement_types=kinds,
            )
        return cls(text)


@dataclass(frozen=True, slots=True)
class ConfinedFiles:
    """Parquet files an untrusted caller named, all real paths inside the entity directory."""

    paths: tuple[str, ...]

    @classmethod
    def resolve(cls, raw: str, entity_dir: Path | None) -> ConfinedFiles:
        """Confine a caller's entity path to ``entity_dir``.

        The path (relative to ``entity_dir``, or absolute) must not contain ``..``, globs or a
        URL, and its real path (symlinks followed) must lie inside the real ``entity_dir``;
        a directory is read as every ``*.parquet`` below it, each file checked the same way.

        Args:
            raw: the path as sent.
            entity_dir: the configured directory; ``None`` refuses every path.

        Returns:
            The real paths of the files to read, sorted.

        Raises:
            EntityPathRefusedError: no directory configured, or the path is refused.
        """
        if entity_dir is None:
            raise EntityPathRefusedError(
                "entity rows cannot be read from a server path: set "
                f"{_ENTITY_DIR_SETTING} to the directory callers may read, or send the "
                "rows as Arrow IPC",
                setting=_ENTITY_DIR_SETTING,
            )
        if not plain_path(raw):
            raise EntityPathRefusedError(
                f"entity_path {raw!r} is refused: name one Parquet file or directory inside "
                f"{_ENTITY_DIR_SETTING}, without '..', globs or URLs",
                setting=_ENTITY_DIR_SETTING,
            )
        base = os.path.realpath(entity_dir)
        target = os.path.realpath(os.path.join(base, raw))
        # Checked before anything is listed: "/" must not start a walk of the whole disk.
        if not inside(target, base):
            raise _outside(raw)
        if os.path.isdir(target):
            candidates = [
                os.path.join(root, name)
                for root, _, names in os.walk(target, followlinks=False)
                for name in names
                if name.endswith(".parquet")
            ]
        else:
            candidates = [target]
        # Real paths: a symlink below the directory that leaves it is caught here.
        files = sorted({os.path.realpath(p) for p in candidates})
        if not all(inside(f, base) for f in files):
            raise _outside(raw)
        files = [f for f in files if os.path.isfile(f)]
        if not files:
            raise EntityPathRefusedError(
                f"entity_path {raw!r} names no Parquet file inside {_ENTITY_DIR_SETTING}",
                setting=_ENTITY_DIR_SETTING,
            )
        return cls(tuple(files))


@dataclass(frozen=True, slots=True)
class UntrustedEntities:
    """Entity rows from an HTTP caller: run confined, on a locked-down connection, in limits.

    Attributes:
        rows: uploaded rows, a checked SELECT, or files confined to the entity directory.
        limits: what the request may use.
    """

    rows: pa.Table | SandboxedSql | ConfinedFiles
    limits: RequestLimits


def _outside(raw: str) -> EntityPathRefusedError:
    return EntityPathRefusedError(
        f"entity_path {raw!r} resolves outside {_ENTITY_DIR_SETTING}; name a Parquet file or "
        "directory inside it",
        setting=_ENTITY_DIR_SETTING,
    )


def plain_path(raw: str) -> bool:
    """Whether a caller's path is a plain one: not empty, no NUL, URL, glob or ``..``."""
    return bool(raw) and not (
        "\x00" in raw or "://" in raw or any(c in raw for c in "*?[") or ".." in Path(raw).parts
    )


def inside(path: str, base: str) -> bool:
    """Whether the (real) ``path`` is ``base`` or below it."""
    return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _is_table_ref(node: dict[str, Any]) -> bool:
    # Table references carry a type, an alias and a sample; expressions carry a class and
    # query nodes no alias. A reference of a kind not known here is refused (fails closed).
    return {"type", "alias", "sample"} <= node.keys() and "class" not in node


def _scoped_refs(
    node: Any, visible: frozenset[str]
) -> Iterator[tuple[dict[str, Any], frozenset[str]]]:
    """Every table reference in a serialized parse tree, with the CTE names in its scope.

    CTE names are scoped as DuckDB binds them: the body of the i-th CTE of a ``WITH`` sees
    the CTEs up to itself (an earlier body naming a later CTE reads the catalog instead),
    the query after the ``WITH`` sees all of them, and nothing outside sees any. A global
    set of CTE names would let ``... FROM duckdb_views UNION (WITH duckdb_views AS ...)``
    read a system view.
    """
    if isinstance(node, list):
        for value in node:
            yield from _scoped_refs(value, visible)
        return
    if not isinstance(node, dict):
        return
    if _is_table_ref(node):
        yield node, visible
    entries = [e for e in (node.get("cte_map") or {}).get("map", []) or [] if isinstance(e, dict)]
    names = [e.get("key") for e in entries]
    for i, entry in enumerate(entries):
        yield from _scoped_refs(entry.get("value"), visible | {str(n) for n in names[: i + 1]})
    inner = visible | {str(n) for n in names}
    for key, value in node.items():
        if key != "cte_map":
            yield from _scoped_refs(value, inner)


def check_relations(query: SandboxedSql, views: Collection[str]) -> None:
    """Refuse a query that reads anything but ``views``, its CTEs and pure table functions.

    Args:
        query: a parsed entity query.
        views: the names of the offline views registered for the request.

    Raises:
        EntitySqlRefusedError: the query names another table, a file, a URL or a table
            function that reads outside the views.
    """
    allowed = f"one SELECT over the offline views: {', '.join(sorted(views)) or '(none)'}"
    con = duckdb.connect(":memory:")
    try:
        # Only parses: the text is a string literal here, never a statement.
        row = con.execute(f"SELECT json_serialize_sql({quote_literal(query.sql)})").fetchone()
    finally:
        con.close()
    try:
        tree = json.loads(row[0]) if row else {"error": True}
        refs = [] if tree.get("error") else list(_scoped_refs(tree, frozenset()))
    except RecursionError:
        # DuckDB parses up to 1000 nested expressions; Python's JSON reader and our walk
        # stop sooner. Deeper is refused, never a 500.
        raise EntitySqlRefusedError(
            f"entity_sql is nested too deeply to check; send {allowed} with fewer nested "
            "expressions or subqueries",
        ) from None
    if tree.get("error"):
        raise EntitySqlRefusedError(
            f"entity_sql cannot be checked ({tree.get('error_message', 'unsupported')}); "
            f"send {allowed}",
        )
    for ref, ctes in refs:
        kind = ref.get("type")
        if kind == "BASE_TABLE":
            name = ref.get("table_name")
            unqualified = not ref.get("schema_name") and not ref.get("catalog_name")
            if unqualified and (name in views or name in ctes):
                continue
            what = f"table {name!r}"
        elif kind == "TABLE_FUNCTION":
            function = ref.get("function") or {}
            name = function.get("function_name")
            if name in PURE_TABLE_FUNCTIONS and not function.get("schema"):
                continue
            what = f"table function {name}()"
        elif kind in _COMBINING_REFS:
            continue
        else:
            what = f"a {str(kind).lower()} reference"
        raise EntitySqlRefusedError(
            f"entity_sql may not read {what}; send {allowed} (table functions: "
            f"{', '.join(sorted(PURE_TABLE_FUNCTIONS))})",
            views=sorted(views),
        )


def lock_down(con: duckdb.DuckDBPyConnection, allowed_paths: Iterable[str]) -> None:
    """Confine ``con`` to reading ``allowed_paths``, for good.

    Call it after the offline views are registered and before any caller SQL is bound. The
    order matters: DuckDB refuses to change ``allowed_paths`` once external access is off,
    and nothing can be changed once the configuration is locked.

    Args:
        con: a connection with the request's views registered.
        allowed_paths: the exact files the views and the entity source read.
    """
    listed = ", ".join(quote_literal(p) for p in sorted(set(allowed_paths)))
    execute(con, f"SET allowed_paths = [{listed}]")
    execute(con, "SET allowed_directories = []")
    execute(con, "SET enable_external_access = false")
    execute(con, "SET autoinstall_known_extensions = false")
    execute(con, "SET autoload_known_extensions = false")
    execute(con, "SET lock_configuration = true")


class Watchdog:
    """Interrupt a connection's running (or next streamed) query after ``seconds``.

    Args:
        con: the connection to interrupt.
        seconds: the wall-clock budget; ``None`` means no limit.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, seconds: float | None) -> None:
        self._con = con
        self._lock = threading.Lock()
        self._done = False
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire) if seconds else None
        if self._timer is not None:
            self._timer.daemon = True

    def _fire(self) -> None:
        # The lock keeps interrupt() off a connection that is being closed.
        with self._lock:
            if self._done:
                return
            self.fired = True
            self._con.interrupt()

    def __enter__(self) -> Watchdog:
        if self._timer is not None:
            self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._done = True
        if self._timer is not None:
            self._timer.cancel()
