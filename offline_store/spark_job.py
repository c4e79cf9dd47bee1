"""The Spark retrieval job: a lazily built Spark DataFrame with Feast's outputs around it.

``to_spark_df()`` is the DataFrame itself (nothing runs until an action). ``to_arrow()`` and
``to_df()`` collect it, as Feast's do, with on-demand views applied on the driver by Feast.
``to_parquet(path)`` and ``persist`` write from the executors (on-demand views applied there,
partition by partition, with ``mapInArrow``): nothing is collected to the driver.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast.infra.offline_stores.file_source import SavedDatasetFileStorage
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.saved_dataset import SavedDatasetStorage

from foundation.errors import ConflictError, InvalidRequestError
from offline_store.frame_types import (
    SUMMARY_FILE,
    feast_frame_types,
    pandas_metadata,
    with_feast_types,
)
from offline_store.job import FrameJob, apply_odfvs

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

BuildFn = Callable[[], tuple["DataFrame", RetrievalMetadata | None]]


class _OdfvContext(RetrievalJob):
    """What :func:`offline_store.job.apply_odfvs` reads from a job, picklable for executors."""

    def __init__(
        self,
        odfvs: list[OnDemandFeatureView],
        full_feature_names: bool,
        metadata: RetrievalMetadata | None,
    ) -> None:
        self._odfvs = odfvs
        self._full = full_feature_names
        self._meta = metadata

    @property
    def full_feature_names(self) -> bool:
        return self._full

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return self._odfvs

    @property
    def metadata(self) -> RetrievalMetadata | None:
        return self._meta

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        raise NotImplementedError  # pragma: no cover - never run, only read by apply_odfvs

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        raise NotImplementedError  # pragma: no cover

    def persist(
        self,
        storage: SavedDatasetStorage,
        allow_overwrite: bool = False,
        timeout: int | None = None,
    ) -> None:
        raise NotImplementedError  # pragma: no cover


class SparkRetrievalJob(FrameJob):
    """A point-in-time join or pull on Spark, built when first asked for.

    Args:
        build: returns the DataFrame and the retrieval metadata (it may run a small Spark
            action, e.g. the entity time range); called once.
        full_feature_names: whether feature columns are ``view__feature``.
        on_demand_feature_views: ODFVs applied to the result.
    """

    def __init__(
        self,
        build: BuildFn,
        *,
        full_feature_names: bool = False,
        on_demand_feature_views: list[OnDemandFeatureView] | None = None,
        pandas_dtypes: dict[str, str] | None = None,
    ) -> None:
        self._build = build
        self._built: tuple[DataFrame, RetrievalMetadata | None] | None = None
        self._full_feature_names = full_feature_names
        self._odfvs = on_demand_feature_views or []
        # Entity columns given with pandas extension dtypes (``Int64``...), kept in results.
        self._pandas_dtypes = pandas_dtypes or {}

    def _get(self) -> tuple[DataFrame, RetrievalMetadata | None]:
        if self._built is None:
            self._built = self._build()
        return self._built

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return self._odfvs

    @property
    def metadata(self) -> RetrievalMetadata | None:
        return self._get()[1]

    def to_spark_df(self) -> DataFrame:
        """The result as a lazy Spark DataFrame (on-demand views not applied)."""
        return self._get()[0]

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        # The DuckDB store's (and Feast's) result types: nanosecond timestamps.
        return feast_frame_types(self.to_spark_df().toArrow(), self._pandas_dtypes)

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        frame: pd.DataFrame = self._to_arrow_internal(timeout).to_pandas()
        return frame

    def iter_batches(
        self,
        max_rows: int,
        *,
        on_total: Callable[[int], None] | None = None,
        feast_types: bool = False,
    ) -> Iterator[pa.RecordBatch]:
        """Stream the result to the driver one partition at a time, in result order.

        ``on_total`` is accepted for the DuckDB engine's sake and not called: counting would
        run the whole Spark plan twice (the Spark engine writes from the executors instead).
        ``feast_types`` gives the batches ``to_arrow``'s types (nanosecond timestamps).

        Raises:
            InvalidRequestError: ``max_rows`` is not positive.
        """
        if max_rows <= 0:
            raise InvalidRequestError(f"max_rows must be positive, got {max_rows}")
        if feast_types:
            yield from with_feast_types(self.iter_batches(max_rows), self._pandas_dtypes)
            return
        frame = self.to_spark_df()
        columns = frame.columns
        rows: list[Any] = []
        for row in frame.toLocalIterator(prefetchPartitions=False):
            rows.append(row)
            if len(rows) == max_rows:
                yield self._batch(rows, columns)
                rows = []
        if rows:
            yield self._batch(rows, columns)

    def _batch(self, rows: list[Any], columns: list[str]) -> pa.RecordBatch:
        table = pa.Table.from_pylist([r.asDict() for r in rows])
        table = table.select(columns)
        if self._odfvs:
            table = apply_odfvs(table, self)
        return table.combine_chunks().to_batches()[0]

    def _with_odfvs(self) -> DataFrame:
        """The result with on-demand columns computed on the executors."""
        frame = self.to_spark_df()
        if not self._odfvs:
            return frame
        from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

        context = _OdfvContext(self._odfvs, self._full_feature_names, self.metadata)
        empty = to_arrow_schema(frame.schema, timezone="UTC").empty_table()
        schema = apply_odfvs(empty, context).schema

        def transform(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                out = apply_odfvs(pa.Table.from_batches([batch]), context)
                yield from out.cast(schema).to_batches()

        return frame.mapInArrow(transform, from_arrow_schema(schema))

    def to_parquet(self, path: str | Path, *, allow_overwrite: bool = True) -> str:
        """Write the result as a directory of Parquet part files, from the executors.

        Part files are named in result order, so reading the directory back (Spark, DuckDB,
        pyarrow) gives the rows in entity order.

        Args:
            path: the destination directory.
            allow_overwrite: if false, refuse to replace an existing path.

        Returns:
            The path written.

        Raises:
            ConflictError: the path exists and ``allow_overwrite`` is false.
        """
        frame = self._with_odfvs()
        mode = "overwrite" if allow_overwrite else "errorifexists"
        try:
            frame.write.mode(mode).parquet(str(path))
        except Exception as exc:
            if not allow_overwrite and "already exists" in str(exc).lower():
                raise ConflictError(
                    f"{path} already exists; pass allow_overwrite=True or choose another path",
                    path=str(path),
                ) from exc
            raise
        self._write_pandas_summary(frame, str(path))
        return str(path)

    def _write_pandas_summary(self, frame: DataFrame, path: str) -> None:
        """The entity columns' pandas dtypes beside the parts, in a ``_common_metadata``
        summary file: executors write the parts without them, and ``pd.read_parquet`` of
        the folder (and :func:`offline_store.saved.load_training_dataset`) read them there.
        Readers of the parts (Spark, DuckDB, our listing) skip ``_`` files."""
        from pyspark.sql.pandas.types import to_arrow_schema

        schema = to_arrow_schema(frame.schema, timezone="UTC")
        metadata = pandas_metadata(schema, self._pandas_dtypes)
        if metadata is None or "://" in path:
            return
        pq.write_metadata(schema.with_metadata(metadata), os.path.join(path, SUMMARY_FILE))

    def persist(
        self,
        storage: SavedDatasetStorage,
        allow_overwrite: bool = False,
        timeout: int | None = None,
    ) -> None:
        """Write the result to a Feast file storage (Parquet) or Spark storage (table/path)."""
        if isinstance(storage, SavedDatasetFileStorage):
            self.to_parquet(storage.file_options.uri, allow_overwrite=allow_overwrite)
            return
        options = getattr(storage, "spark_options", None)
        if options is not None and options.table:
            mode = "overwrite" if allow_overwrite else "errorifexists"
            self._with_odfvs().write.mode(mode).saveAsTable(options.table)
            return
        if options is not None and options.path:
            self.to_parquet(options.path, allow_overwrite=allow_overwrite)
            return
        raise InvalidRequestError(
            f"cannot persist to {type(storage).__name__}; use SavedDatasetFileStorage or "
            "SavedDatasetSparkStorage with a table or path"
        )

    def supports_remote_storage_export(self) -> bool:
        return False
