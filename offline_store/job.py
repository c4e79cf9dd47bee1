"""The retrieval job: a lazily run DuckDB query with bounded-memory outputs.

Besides Feast's ``to_df``/``to_arrow``, a job can stream (:meth:`DuckDBRetrievalJob.iter_batches`)
and write Parquet straight from DuckDB (:meth:`DuckDBRetrievalJob.to_parquet`), so results larger
than RAM never become one in-memory table.

A job for an untrusted caller carries :class:`~offline_store.sandbox.RequestLimits`: every
connection it opens is watched by a timer that interrupts the query at the time limit (the
streaming of a result included), and limit errors become 408/413 errors whose messages hold
no SQL of ours.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast.infra.offline_stores.file_source import SavedDatasetFileStorage
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.saved_dataset import SavedDatasetStorage, ValidationReference

from foundation.errors import (
    ConflictError,
    FeatureStoreError,
    InvalidRequestError,
    MemoryLimitExceededError,
    QueryTimeoutError,
)
from offline_store.connections import job_connection
from offline_store.frame_types import (
    feast_frame_types,
    pandas_metadata,
    result_frame,
    with_feast_types,
)
from offline_store.sandbox import RequestLimits, Watchdog
from offline_store.sources import DuckDBSettings, execute, fetch_all, quote_literal


@dataclass(frozen=True, slots=True)
class Query:
    """What a job runs on its connection.

    Attributes:
        sql: the query returning the job's rows.
        setup: statements executed first, in order (temp tables ``sql`` reads).
        count_sql: a query returning one integer, the number of rows ``sql`` returns, cheap
            once ``setup`` has run; ``None`` when only running the query could tell.
    """

    sql: str
    setup: tuple[str, ...] = ()
    count_sql: str | None = None


# Registers inputs on a fresh connection and returns the query to run there.
Prepare = Callable[[duckdb.DuckDBPyConnection], Query]
# Computes the retrieval metadata on a fresh connection (it may read the entity rows).
MetadataFn = Callable[[duckdb.DuckDBPyConnection], RetrievalMetadata]


class FrameJob(RetrievalJob):
    """A retrieval job whose ``to_df`` is Feast's without its extra copy of the frame."""

    def to_df(
        self,
        validation_reference: ValidationReference | None = None,
        timeout: int | None = None,
    ) -> pd.DataFrame:
        """Feast's ``to_df`` (``to_arrow``: on-demand views, validation), via
        :func:`offline_store.frame_types.result_frame`."""
        return result_frame(
            self.to_arrow(validation_reference=validation_reference, timeout=timeout)
        )


class DuckDBRetrievalJob(FrameJob):
    """A query over Parquet that runs only when a result is asked for.

    Args:
        settings: DuckDB resource limits for the connection the query runs on.
        prepare: registers inputs on the connection and returns the SQL to run.
        full_feature_names: whether feature columns are ``view__feature``.
        on_demand_feature_views: ODFVs Feast's ``to_arrow`` applies to the result.
        metadata: computes the retrieval metadata on a connection of the job, on first use
            (it may need to read the entity rows, which is not free).
        limits: set for an untrusted caller: the wall-clock limit of each connection, and
            errors reported without our SQL (memory and threads are in ``settings``).
    """

    def __init__(
        self,
        settings: DuckDBSettings,
        prepare: Prepare,
        *,
        full_feature_names: bool = False,
        on_demand_feature_views: list[OnDemandFeatureView] | None = None,
        metadata: MetadataFn | None = None,
        limits: RequestLimits | None = None,
        pandas_dtypes: dict[str, str] | None = None,
    ) -> None:
        self._settings = settings
        self._pandas_dtypes = pandas_dtypes or {}
        self._prepare = prepare
        self._limits = limits
        self._full_feature_names = full_feature_names
        self._odfvs = on_demand_feature_views or []
        self._metadata_fn = metadata
        self._metadata: RetrievalMetadata | None = None

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return self._odfvs

    @property
    def metadata(self) -> RetrievalMetadata | None:
        if self._metadata is None and self._metadata_fn is not None:
            with self._connect() as con:
                self._metadata = self._metadata_fn(con)
        return self._metadata

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection of the job's own database, watched by the time limit; DuckDB errors
        become ours."""
        timeout = self._limits.timeout_seconds if self._limits else None
        # An untrusted caller's job locks its database down: never one to reuse.
        with (
            job_connection(self._settings, reuse=self._limits is None) as con,
            Watchdog(con, timeout) as watchdog,
        ):
            try:
                yield con
            except (duckdb.Error, OSError) as exc:
                # A streamed result reports the interrupt as an OSError from Arrow.
                if watchdog.fired:
                    raise self._timeout() from exc
                if isinstance(exc, duckdb.Error):
                    raise _translate(exc, self._limits) from exc
                raise
            except FeatureStoreError as exc:
                if watchdog.fired:
                    raise self._timeout() from exc
                raise

    def _timeout(self) -> QueryTimeoutError:
        seconds = self._limits.timeout_seconds if self._limits else 0.0
        return QueryTimeoutError(
            f"the training query ran past its {seconds:g} s limit and was cancelled "
            "(FEATURESTORE_TRAINING_TIMEOUT_SECONDS); ask for fewer entity rows or features, "
            "or build large datasets in-process with the SDK",
            limit_seconds=seconds,
            setting="FEATURESTORE_TRAINING_TIMEOUT_SECONDS",
        )

    def _start(
        self, con: duckdb.DuckDBPyConnection, on_total: Callable[[int], None] | None = None
    ) -> str:
        """Prepare ``con``, run the setup statements, report the row count if asked.

        Returns:
            The job's SQL, ready to run on ``con``.
        """
        query = self._prepare(con)
        setup, streaming = self._settings.setup_threads, self._settings.threads
        switch = bool(query.setup and setup and streaming and setup != streaming)
        if switch:
            execute(con, f"SET threads = {setup}")
        for statement in query.setup:
            execute(con, statement)
        if switch:
            execute(con, f"SET threads = {streaming}")
        if on_total is not None and query.count_sql is not None:
            on_total(int(fetch_all(con, query.count_sql)[0][0]))
        return query.sql

    def _run(
        self, con: duckdb.DuckDBPyConnection, on_total: Callable[[int], None] | None = None
    ) -> duckdb.DuckDBPyRelation:
        return con.sql(self._start(con, on_total))

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        with self._connect() as con:
            table = self._run(con).to_arrow_table()
        return feast_frame_types(table, self._pandas_dtypes)

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        frame: pd.DataFrame = self._to_arrow_internal(timeout).to_pandas()
        return frame

    def to_sql(self) -> str:
        """The SQL the job runs (it refers to temp tables the job creates first)."""
        with self._connect() as con:
            return self._prepare(con).sql

    def iter_batches(
        self,
        max_rows: int,
        *,
        on_total: Callable[[int], None] | None = None,
        feast_types: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """Stream the result in record batches of at most ``max_rows`` rows.

        DuckDB produces the rows incrementally under its memory limit (sorts and joins spill
        to the temp directory), so memory stays bounded whatever the size of the result.
        On-demand feature views are applied batch by batch.

        Args:
            max_rows: the largest batch to yield; must be positive.
            on_total: called once, before the first batch, with the number of rows the
                result will have, when the job can count them cheaply (latest-per-entity
                pulls can: their winners are known before the first row streams).
            feast_types: give the batches ``to_arrow``'s types (Feast's nanosecond
                timestamps, entity dtypes in the pandas metadata) instead of DuckDB's.

        Yields:
            Record batches in result order, all with the same schema.

        Raises:
            InvalidRequestError: ``max_rows`` is not positive.
            QueryTimeoutError: past the time limit of an untrusted request (also while
                streaming: the connection lives until the last batch).
            FeatureStoreError: the query failed.
        """
        if max_rows <= 0:
            raise InvalidRequestError(f"max_rows must be positive, got {max_rows}")
        if feast_types:
            yield from with_feast_types(
                self.iter_batches(max_rows, on_total=on_total), self._pandas_dtypes
            )
            return
        with self._connect() as con:
            reader = self._run(con, on_total).to_arrow_reader(max_rows)
            for batch in reader:
                # DuckDB batches are vector-aligned and can exceed the request.
                for start in range(0, batch.num_rows, max_rows):
                    yield self._with_odfvs(batch.slice(start, max_rows))

    def _with_odfvs(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if not self._odfvs:
            return batch
        table = apply_odfvs(pa.Table.from_batches([batch]), self)
        return table.combine_chunks().to_batches()[0] if table.num_rows else _empty(table)

    def to_parquet(self, path: str | Path, *, allow_overwrite: bool = True) -> str:
        """Write the result to one Parquet file without building it in Python memory.

        Without on-demand views this is a single DuckDB ``COPY ... TO``; with them, or for
        an untrusted caller's job (its connection may write no file), batches are streamed
        through the transformations into a Parquet writer.

        Args:
            path: the destination file.
            allow_overwrite: if false, refuse to replace an existing file.

        Returns:
            The absolute path written.

        Raises:
            ConflictError: the file exists and ``allow_overwrite`` is false.
            FeatureStoreError: the query failed.
        """
        dest = os.path.abspath(path)
        if not allow_overwrite and os.path.exists(dest):
            raise ConflictError(
                f"{dest} already exists; pass allow_overwrite=True or choose another path",
                path=dest,
            )
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        tmp = f"{dest}.tmp-{os.getpid()}"
        try:
            if self._odfvs or self._limits is not None:
                self._stream_to_parquet(tmp)
            else:
                with self._connect() as con:
                    sql = self._start(con)
                    options = self._parquet_metadata(con, sql)
                    execute(con, f"COPY ({sql}) TO {quote_literal(tmp)} (FORMAT parquet{options})")
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        # Readers never see a half-written file.
        os.replace(tmp, dest)
        return dest

    def _parquet_metadata(self, con: duckdb.DuckDBPyConnection, sql: str) -> str:
        """COPY options that store the entity columns' pandas dtypes in the file, so the file
        reads back (``pd.read_parquet``, a reloaded saved dataset) typed as ``to_df`` gives it;
        without such columns none (and no query for the result's schema)."""
        if not self._pandas_dtypes:
            return ""
        schema = con.sql(sql).limit(0).to_arrow_table().schema
        metadata = pandas_metadata(schema, self._pandas_dtypes)
        if metadata is None:
            return ""
        return f", KV_METADATA {{pandas: {quote_literal(metadata[b'pandas'].decode())}}}"

    def _stream_to_parquet(self, path: str) -> None:
        writer: pq.ParquetWriter | None = None
        try:
            for batch in self.iter_batches(65_536):
                if writer is None:
                    metadata = pandas_metadata(batch.schema, self._pandas_dtypes)
                    writer = pq.ParquetWriter(path, batch.schema.with_metadata(metadata))
                writer.write_batch(batch)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            pq.write_table(self.to_arrow().slice(0, 0), path)

    def persist(
        self,
        storage: SavedDatasetStorage,
        allow_overwrite: bool = False,
        timeout: int | None = None,
    ) -> None:
        """Write the result to a Feast ``SavedDatasetFileStorage`` location (Parquet)."""
        if not isinstance(storage, SavedDatasetFileStorage):
            raise InvalidRequestError(
                f"cannot persist to {type(storage).__name__}; use SavedDatasetFileStorage"
            )
        self.to_parquet(storage.file_options.uri, allow_overwrite=allow_overwrite)

    def supports_remote_storage_export(self) -> bool:
        return False


def _empty(table: pa.Table) -> pa.RecordBatch:
    return pa.RecordBatch.from_pylist([], schema=table.schema)


def apply_odfvs(table: pa.Table, job: RetrievalJob) -> pa.Table:
    """Append on-demand feature columns the way Feast's ``RetrievalJob.to_arrow`` does.

    Args:
        table: the joined batch features.
        job: supplies the ODFVs, ``full_feature_names`` and the requested feature refs.

    Returns:
        ``table`` with the requested ODFV outputs appended.
    """
    metadata = job.metadata
    requested: dict[str, set[str]] = {}
    for ref in metadata.features if metadata else []:
        view_name, _, feature = ref.partition(":")
        for odfv in job.on_demand_feature_views:
            if view_name in (odfv.name, odfv.projection.name_to_use()):
                name = (
                    f"{odfv.projection.name_to_use()}__{feature}"
                    if job.full_feature_names
                    else feature
                )
                requested.setdefault(odfv.name, set()).add(name)
    for odfv in job.on_demand_feature_views:
        transformed = odfv.transform_arrow(table, job.full_feature_names)
        wanted = requested.get(odfv.name)
        for col in transformed.column_names:
            if col.startswith("__index"):
                continue
            if wanted is None or col in wanted:
                table = table.append_column(col, transformed[col])
    return table


def _translate(exc: Exception, limits: RequestLimits | None = None) -> FeatureStoreError:
    """Map DuckDB errors to our tree: bad input is the caller's fault, the rest is ours.

    For an untrusted caller (``limits`` set) the message keeps DuckDB's first paragraph only:
    its ``LINE n:`` excerpt would show our generated SQL.
    """
    text = str(exc)
    if limits is not None:
        text = " ".join(text.split("\nLINE ", 1)[0].split())
        if isinstance(exc, duckdb.OutOfMemoryException):
            return MemoryLimitExceededError(
                f"the training query needs more than its memory limit {limits.memory_limit} "
                f"(FEATURESTORE_TRAINING_MEMORY_LIMIT) or spill limit {limits.max_temp_size} "
                "(FEATURESTORE_TRAINING_MAX_TEMP_SIZE) and was cancelled: ask for fewer entity "
                "rows or features per request",
                memory_limit=limits.memory_limit,
                setting="FEATURESTORE_TRAINING_MEMORY_LIMIT",
            )
    if isinstance(exc, (duckdb.BinderException, duckdb.ConversionException)):
        return InvalidRequestError(f"offline query rejected: {text}")
    if isinstance(exc, duckdb.OutOfMemoryException):
        return FeatureStoreError(
            f"offline query ran out of memory: {text}; raise offline_store.memory_limit or "
            "check that offline_store.temp_directory is writable",
        )
    return FeatureStoreError(f"offline query failed: {text}")
