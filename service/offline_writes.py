"""The offline half of a push: each offline source appended once, all of them or none.

A push source can feed several feature views, and their batch sources can be different
Parquet sources. :func:`batches_by_source` makes one batch per source: views that share a
source share its rows, which are appended once, not once per view. With our DuckDB
offline store, :class:`OfflineAppend` appends the batches in two steps
(:mod:`offline_store.parts`): :meth:`~OfflineAppend.stage` writes and fsyncs every
source's file under a hidden temp name in its target folder, a name no reader lists
(neither the DuckDB nor the Spark store, nor stock Feast's pyarrow); only once every stage
succeeded does :meth:`~OfflineAppend.commit` rename them all into place. A failure in
either step removes every staged and renamed file: nothing is appended anywhere, and a
retry appends once.

Another offline store that takes pushes (Feast's ``offline_write_batch``, e.g. stock
Feast's file store) has no staging step: at commit its sources are appended in turn
through Feast's provider, and a failure keeps the sources appended before it (the 503
names them).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa
from feast import FeatureStore, FileSource
from feast.feature_view import DUMMY_ENTITY_ID
from feast.infra.offline_stores.offline_store import OfflineStore

from foundation.errors import BackendUnavailableError, InvalidRequestError
from offline_store.historical import file_source
from offline_store.parts import StagedBatch, commit, discard
from offline_store.sources import resolve_path
from offline_store.store import DuckDBParquetOfflineStore, stage_view_rows
from service.catalog import ViewInfo

_FIX = "fix the offline store (disk space, permissions, mount) and retry the same request"


@dataclass(frozen=True, slots=True)
class OfflineBatch:
    """The rows one push appends to one offline source.

    Attributes:
        views: the target views reading that source, in request order; the first names
            the source in messages.
        table: the rows, with the source's columns.
    """

    views: tuple[ViewInfo, ...]
    table: pa.Table


def source_table(table: pa.Table) -> pa.Table:
    """A view's validated table without the placeholder key of an entity-less view, which
    is not a source column."""
    if DUMMY_ENTITY_ID in table.column_names:
        return table.drop_columns([DUMMY_ENTITY_ID])
    return table


def _source_key(store: FeatureStore, info: ViewInfo) -> str:
    source = info.view.batch_source
    if isinstance(source, FileSource):
        path = resolve_path(store.config.repo_path, source.path)
        return "file:" + (path if "://" in path else os.path.abspath(path))
    return "view:" + info.name


def _merged(tables: Sequence[pa.Table]) -> pa.Table:
    """The columns of every table (the first table's where several have one)."""
    out = tables[0]
    for table in tables[1:]:
        for name in table.column_names:
            if name not in out.column_names:
                out = out.append_column(table.schema.field(name), table[name])
    return out


def batches_by_source(
    store: FeatureStore,
    tables: Sequence[tuple[ViewInfo, pa.Table]],
    *,
    widen: Callable[[ViewInfo, pa.Table], pa.Table] | None = None,
) -> list[OfflineBatch]:
    """One batch per offline source of the target views.

    Args:
        store: the Feast store (its repo path resolves relative source paths).
        tables: (view, validated table) pairs, all of the same rows.
        widen: turns a source's merged table into the rows it stores, given the first
            view reading it (e.g. the source's other columns added).

    Returns:
        The batches in the order their first view comes in ``tables``.
    """
    groups: dict[str, list[tuple[ViewInfo, pa.Table]]] = {}
    for info, table in tables:
        groups.setdefault(_source_key(store, info), []).append((info, source_table(table)))
    batches = []
    for members in groups.values():
        first = members[0][0]
        merged = _merged([table for _, table in members])
        rows = widen(first, merged) if widen is not None else merged
        batches.append(OfflineBatch(tuple(info for info, _ in members), rows))
    return batches


def check_offline_target(store: FeatureStore, views: Sequence[ViewInfo]) -> object:
    """Refuse, before anything is written, an offline push the offline store cannot take.

    Returns:
        The offline store.

    Raises:
        InvalidRequestError: the store has no ``offline_write_batch``, or (our DuckDB
            store) a view's batch source is not a Parquet FileSource.
    """
    offline_store = getattr(store._get_provider(), "offline_store", None)
    writer = getattr(type(offline_store), "offline_write_batch", None)
    if writer is None or writer is OfflineStore.offline_write_batch:
        raise InvalidRequestError(
            f"the offline store of project {store.project!r} "
            f"({type(offline_store).__name__}) does not take pushes; send "
            '"to": "online"',
        )
    if isinstance(offline_store, DuckDBParquetOfflineStore):
        for info in views:
            file_source(info.view.batch_source, f"feature view {info.name!r}")
    return offline_store


def _reason(exc: OSError) -> str:
    # strerror, not str(exc): the file path stays in the server log
    return f"{type(exc).__name__}: {exc.strerror or 'I/O error'}"


def _mapped(table: pa.Table, info: ViewInfo) -> pa.Table:
    """The field mapping Feast's provider applies before ``offline_write_batch`` (whose
    staging step :meth:`OfflineAppend.stage` takes: :func:`stage_view_rows`)."""
    mapping = info.view.batch_source.field_mapping if info.view.batch_source else None
    if not mapping:
        return table
    return table.rename_columns([mapping.get(name, name) for name in table.column_names])


class OfflineAppend:
    """A push's offline append: :meth:`stage` (nothing visible), then :meth:`commit`.

    Args:
        store: the Feast store whose offline store takes the rows.
        batches: from :func:`batches_by_source`.

    Raises:
        InvalidRequestError: the offline store takes no pushes, or (DuckDB store) a view's
            batch source is not a Parquet FileSource; nothing is written.
    """

    def __init__(self, store: FeatureStore, batches: Sequence[OfflineBatch]) -> None:
        views = [info for batch in batches for info in batch.views]
        offline_store = check_offline_target(store, views)
        self._store = store
        self._batches = list(batches)
        self._two_step = isinstance(offline_store, DuckDBParquetOfflineStore)
        self._staged: list[StagedBatch] = []

    @property
    def rows(self) -> int:
        """Rows the append adds, summed over sources."""
        return sum(batch.table.num_rows for batch in self._batches)

    def stage(self, *, online: bool) -> None:
        """Write and fsync every source's file where no reader sees it (DuckDB store;
        another store has no such step).

        Args:
            online: the rows go online after this step (for the message).

        Raises:
            BackendUnavailableError: writing failed on I/O; nothing is left staged.
            SchemaMismatchError, InvalidRequestError: the rows do not fit a source
                (nothing is left staged).
        """
        if not self._two_step:
            return
        for batch in self._batches:
            info = batch.views[0]
            try:
                rows = _mapped(batch.table, info)
                self._staged.append(stage_view_rows(self._store.config, info.view, rows))
            except OSError as exc:
                self.discard()
                nothing = "nothing was written" + (", online or offline" if online else "")
                raise BackendUnavailableError(
                    f"writing the rows to the offline source of feature view {info.name!r} "
                    f"failed ({_reason(exc)}); {nothing}; {_FIX}",
                    backend="offline_store",
                    feature_view=info.name,
                ) from exc
            except BaseException:
                self.discard()
                raise

    def discard(self) -> None:
        """Remove every staged file (the request failed before the commit)."""
        discard(self._staged)
        self._staged.clear()

    def commit(self, *, online: bool) -> int:
        """Make every staged file visible at once (another store: append in turn).

        Args:
            online: the rows were written online first (for the message).

        Returns:
            Rows appended, summed over sources.

        Raises:
            BackendUnavailableError: a rename or fsync failed (DuckDB store: nothing is
                appended), or another store's append failed (the sources appended before
                it keep their rows).
        """
        if not self._two_step:
            return self._append_in_turn(online=online)
        try:
            commit(self._staged)
        except OSError as exc:
            failed = next((i for i, s in enumerate(self._staged) if s.failed), 0)
            view = self._batches[failed].views[0].name
            raise _failed(
                f"moving the rows into the offline source of feature view {view!r} failed "
                f"({_reason(exc)}); nothing was appended offline",
                view,
                online=online,
            ) from exc
        finally:
            self._staged.clear()
        return self.rows

    def _append_in_turn(self, *, online: bool) -> int:
        provider = self._store._get_provider()
        appended: list[str] = []
        for batch in self._batches:
            info = batch.views[0]
            try:
                provider.ingest_df_to_offline_store(info.view, batch.table)
            except OSError as exc:
                kept = (
                    f"; views {appended} were already appended offline and a retry appends "
                    "them again"
                    if appended
                    else ""
                )
                raise _failed(
                    f"appending the rows to the offline source of feature view {info.name!r} "
                    f"failed ({_reason(exc)}){kept}",
                    info.name,
                    online=online,
                ) from exc
            appended.extend(view.name for view in batch.views)
        return self.rows


def _failed(what: str, view: str, *, online: bool) -> BackendUnavailableError:
    """The 503 for an offline append that failed on I/O after any online write."""
    online_part = "the rows are in the online store, but " if online else ""
    skipped = ": rows already online are skipped as already stored" if online else ""
    return BackendUnavailableError(
        f"{online_part}{what}; {_FIX}{skipped}",
        backend="offline_store",
        feature_view=view,
    )
