"""Statistics of offline data: a feature view over a window on demand, a saved dataset per split.

The computation is :mod:`foundation.statistics` (shared with the materialization engine,
which profiles the rows it writes); the runs are stored by :mod:`foundation.stats_log` in
the registry database, one per (subject, split, run), so they form a time series.

- :func:`profile_window`: every row of a view's source with ``start <= event_ts < end``,
  streamed from DuckDB batch by batch (never the whole window in memory).
- :func:`profile_saved_dataset`: called by ``save_training_dataset`` right after it wrote the
  dataset's Parquet file; the feature columns are read back batch by batch (from the page
  cache, as they were just written) and profiled as a whole (split ``all``) and per
  time-based split (``train``, ``validation``, ``test`` at the default 80/10/10 time
  quantiles of :func:`offline_store.split.time_split`).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import sqlalchemy as sa
from feast import FeatureStore
from feast.feature_view import DUMMY_ENTITY_ID
from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

from foundation.errors import InvalidRequestError
from foundation.statistics import TableProfiler
from foundation.stats_log import FEATURE_VIEW, TRAINING_DATASET, StatisticsLog, StatisticsRun
from offline_store.datasets import SavedDataset
from offline_store.split import _cutoffs, _times

BATCH_ROWS = 65_536
SPLITS = ("train", "validation", "test")


def open_log(fs: FeatureStore) -> tuple[StatisticsLog, sa.Engine]:
    """The statistics log next to a store's SQL registry; dispose the engine after.

    Raises:
        InvalidRequestError: the registry is not SQL.
    """
    url = str(fs.config.registry.path)
    if "://" not in url:
        raise InvalidRequestError(
            "statistics live next to a SQL registry; set registry_type: sql and a SQLAlchemy "
            f"URL as registry.path (found {url!r})"
        )
    engine = sa.create_engine(url, pool_pre_ping=True)
    return StatisticsLog(engine, fs.project), engine


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def profile_window(
    fs: FeatureStore,
    view_name: str,
    start: datetime,
    end: datetime,
    *,
    log: StatisticsLog | None = None,
) -> StatisticsRun:
    """Profile every row of a feature view's batch source in ``[start, end)`` and store it.

    Args:
        fs: the Feast store.
        view_name: the batch feature view.
        start: window start (naive = UTC).
        end: window end, exclusive.
        log: where to store the run (default: next to the store's registry).

    Returns:
        The stored run (source ``window``).

    Raises:
        InvalidRequestError: the window is empty or reversed, or the view has no batch source.
        FeatureViewNotFoundError: no such view (from Feast).
    """
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise InvalidRequestError(f"window end {end} is not after its start {start}")
    view = fs.get_feature_view(view_name)
    source = view.batch_source
    if source is None:
        raise InvalidRequestError(f"feature view {view_name!r} has no batch source to profile")
    mapping = dict(source.field_mapping or {})
    reverse = {v: k for k, v in mapping.items()}
    features = [f.name for f in view.features]
    join_keys = [c.name for c in view.entity_columns if c.name != DUMMY_ENTITY_ID]
    job = get_offline_store_from_config(fs.config.offline_store).pull_all_from_table_or_query(
        config=fs.config,
        data_source=source,
        join_key_columns=[reverse.get(k, k) for k in join_keys],
        feature_name_columns=[reverse.get(f, f) for f in features],
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or None,
        start_date=start,
        end_date=end,
    )
    profiler = TableProfiler(features)
    streaming = getattr(job, "iter_batches", None)
    batches = streaming(BATCH_ROWS) if callable(streaming) else job.to_arrow().to_batches()
    for batch in batches:
        names = [mapping.get(n, n) for n in batch.schema.names]
        profiler.update(pa.RecordBatch.from_arrays(batch.columns, names=names))
    owned = None
    if log is None:
        log, owned = open_log(fs)
    try:
        return log.record(
            subject_kind=FEATURE_VIEW,
            subject_name=view_name,
            columns=profiler.finish(),
            row_count=profiler.rows,
            source="window",
            window_start=start,
            window_end=end,
        )
    finally:
        if owned is not None:
            owned.dispose()


def profile_saved_dataset(
    record: SavedDataset,
    log: StatisticsLog,
    *,
    timestamp_column: str = "event_timestamp",
) -> list[StatisticsRun]:
    """Profile a saved dataset's feature columns, whole and per time split, and store them.

    Args:
        record: the dataset just saved.
        log: where to store the runs.
        timestamp_column: the entity timestamp column the splits cut on.

    Returns:
        The stored runs: ``all`` first, then the splits (none when the file has no
        timestamp column or no rows).
    """
    parquet = pq.ParquetFile(record.storage_path)
    names = parquet.schema_arrow.names
    columns = [_column_name(ref, record.full_feature_names) for ref in record.features]
    columns = [c for c in columns if c in names]
    profilers = {"all": TableProfiler(columns)}
    cutoffs = None
    if timestamp_column in names and record.row_count:
        times = _times(
            pq.read_table(record.storage_path, columns=[timestamp_column]), timestamp_column
        )
        lo, hi = _cutoffs(times, (0.8, 0.1, 0.1))
        cutoffs = (
            pa.scalar(lo, pa.timestamp("us", tz="UTC")),
            pa.scalar(hi, pa.timestamp("us", tz="UTC")),
        )
        profilers.update({s: TableProfiler(columns) for s in SPLITS})
    wanted = [*columns, timestamp_column] if cutoffs else columns
    for batch in parquet.iter_batches(batch_size=BATCH_ROWS, columns=wanted):
        profilers["all"].update(batch)
        if cutoffs is not None:
            table = pa.Table.from_batches([batch])
            times = _times(table, timestamp_column)
            masks = {
                "train": pc.less(times, cutoffs[0]),
                "validation": pc.and_(
                    pc.greater_equal(times, cutoffs[0]), pc.less(times, cutoffs[1])
                ),
                "test": pc.greater_equal(times, cutoffs[1]),
            }
            for split, mask in masks.items():
                profilers[split].update(table.filter(mask))
    return [
        log.record(
            subject_kind=TRAINING_DATASET,
            subject_name=record.name,
            subject_version=record.version,
            split=split,
            columns=profiler.finish(),
            row_count=profiler.rows,
            source="saved",
            window_start=record.min_event_timestamp,
            window_end=record.max_event_timestamp,
        )
        for split, profiler in profilers.items()
    ]


def _column_name(ref: str, full_feature_names: bool) -> str:
    view, _, feature = ref.partition(":")
    return f"{view}__{feature}" if full_feature_names else feature
