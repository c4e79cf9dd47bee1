"""What a write is: a view's write spec, its stats, and the newest row per entity key of a chunk.

Every write path (bulk, atomic compare-and-set, Feast's online_write_batch) picks its
rows and encodes them here, so they agree on which row wins and on the bytes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa

from foundation.errors import SchemaMismatchError
from online_store import blocks
from online_store.codec import (
    check_entity_type,
    check_feature_type,
    encode_timestamps,
    encode_values,
    event_micros,
)
from online_store.keys import key_parts, key_values, require_present
from online_store.value_types import ValueType, value_type

if TYPE_CHECKING:
    from feast import FeatureView

DEFAULT_CHUNK_ROWS = 10_000
# Rows per batch a materialization pulls from the offline store. With 10k-row chunks these
# keep a 1M-row materialize ~50 MB smaller than 50k/20k at the same speed (benchmarks/
# materialize_bench; docs/offline-store.md).
DEFAULT_BATCH_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class WriteSpec:
    """Everything the writer needs about a view, precomputed once.

    Plain data without Feast objects (types are :mod:`online_store.value_types` members), so
    a Spark executor can unpickle it without importing Feast.
    """

    name: str
    join_keys: tuple[str, ...]
    join_key_types: tuple[ValueType, ...]
    features: tuple[str, ...]
    feature_types: tuple[ValueType, ...]
    timestamp_field: str
    created_timestamp_field: str | None = None

    @classmethod
    def from_feature_view(cls, feature_view: FeatureView) -> WriteSpec:
        """Spec of a Feast feature view (its entity columns, features, source timestamps).

        Raises:
            UnsupportedTypeError: a feature or join key type is not supported.
        """
        join_keys = tuple(c.name for c in feature_view.entity_columns)
        join_types = tuple(value_type(c.dtype.to_value_type()) for c in feature_view.entity_columns)
        features = tuple(f.name for f in feature_view.features)
        feature_types = tuple(value_type(f.dtype.to_value_type()) for f in feature_view.features)
        for key, vt in zip(join_keys, join_types, strict=True):
            check_entity_type(feature_view.name, key, vt)
        for feature, vt in zip(features, feature_types, strict=True):
            check_feature_type(feature_view.name, feature, vt)
        source = feature_view.batch_source
        ts = source.timestamp_field if source is not None else "event_timestamp"
        created = (source.created_timestamp_column or None) if source is not None else None
        return cls(feature_view.name, join_keys, join_types, features, feature_types, ts, created)


@dataclass(frozen=True, slots=True)
class SourcePull:
    """How a materialization reads a view's rows from its batch source.

    Attributes:
        spec: the view's write spec with the names the pulled rows have once the source's
            field mapping renamed them.
        mapping: the source's field mapping (source column -> name in the view).
        columns: the column arguments of ``pull_latest_from_table_or_query``, as the source
            names them (an entity-less view's ``__dummy_id`` is not in the source: the pull
            adds it).
    """

    spec: WriteSpec
    mapping: dict[str, str]
    columns: dict[str, Any]

    @classmethod
    def of(cls, feature_view: FeatureView) -> SourcePull:
        """The pull of ``feature_view``'s rows.

        A source may name its timestamp columns by their source names or by the names the
        field mapping gives them (Feast's stores take the latter; our training join both):
        the pull gets the source's names and the writer the renamed ones.
        """
        from feast.feature_view import DUMMY_ENTITY_ID

        spec = WriteSpec.from_feature_view(feature_view)
        source = feature_view.batch_source
        mapping = dict(source.field_mapping or {}) if source is not None else {}
        reverse = {v: k for k, v in mapping.items()}

        def raw(name: str) -> str:
            return reverse.get(name, name)

        ts = raw(spec.timestamp_field)
        created = raw(spec.created_timestamp_field) if spec.created_timestamp_field else None
        columns = {
            "join_key_columns": [raw(k) for k in spec.join_keys if k != DUMMY_ENTITY_ID],
            "feature_name_columns": [raw(f) for f in spec.features],
            "timestamp_field": ts,
            "created_timestamp_column": created,
        }
        renamed = replace(
            spec,
            timestamp_field=mapping.get(ts, ts),
            created_timestamp_field=mapping.get(created, created) if created else None,
        )
        return cls(renamed, mapping, columns)


@dataclass(slots=True)
class WriteStats:
    """Counts of one write call.

    Attributes:
        rows_in: rows given.
        rows_written: rows stored; the others were skipped because the stored row (or
            another row for the same key in the call) is as new or newer.
        newest_written_micros: the greatest event time stored (epoch microseconds), or
            None when nothing was stored; only reported by the atomic path.
    """

    rows_in: int = 0
    rows_written: int = 0
    newest_written_micros: int | None = None

    @property
    def rows_skipped(self) -> int:
        """Rows not written because a stored or given row for their key is as new."""
        return self.rows_in - self.rows_written


def batch_column(batch: pa.RecordBatch, name: str, view: str) -> pa.Array:
    idx = batch.schema.get_field_index(name)
    if idx < 0:
        raise SchemaMismatchError(
            f"column '{name}' of feature view '{view}' is missing from the data "
            f"(got {batch.schema.names}); include it",
            feature_view=view,
            column=name,
        )
    return batch.column(idx)


def key_codes(columns: list[pa.Array], spec: WriteSpec, num_rows: int) -> np.ndarray:
    """One code per row, equal exactly when the rows' Redis keys are (entity-less: all 0)."""
    codes = np.zeros(num_rows, dtype=np.int64)
    for col, name, vt in zip(columns, spec.join_keys, spec.join_key_types, strict=True):
        values, distinct = pd.factorize(key_values(col, vt, name))
        codes = pd.factorize(codes * len(distinct) + values)[0] if len(distinct) > 1 else codes
    return codes


def newest_rows(codes: np.ndarray, micros: np.ndarray, created: np.ndarray | None) -> np.ndarray:
    """Row index of the newest row per key code (event time, then created time, then first)."""
    n = len(codes)
    if n == 0 or int(codes.max()) == n - 1:
        # Codes count up from 0 in order of first appearance: n distinct keys, one row each.
        return np.arange(n)
    sort_keys: list[np.ndarray] = [np.arange(n)]
    if created is not None:
        sort_keys.append(-created)
    sort_keys += [-micros, codes]
    order = np.lexsort(sort_keys)
    sorted_codes = codes[order]
    first = np.ones(n, dtype=bool)
    first[1:] = sorted_codes[1:] != sorted_codes[:-1]
    return np.sort(order[first])


def join_columns(spec: WriteSpec, chunk: pa.RecordBatch) -> list[pa.Array]:
    """The chunk's join key columns, in the spec's order."""
    return [batch_column(chunk, k, spec.name) for k in spec.join_keys]


def chunk_keys(spec: WriteSpec, chunk: pa.RecordBatch, project: str) -> list[blocks.Block]:
    """The Redis key of every row of the chunk, as blocks side by side."""
    return key_parts(
        join_columns(spec, chunk),
        spec.join_keys,
        spec.join_key_types,
        project,
        num_rows=chunk.num_rows,
    )


def chunk_winners(spec: WriteSpec, chunk: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """The chunk's event times (us) and the row index of each key's newest row.

    Raises:
        SchemaMismatchError: a needed column is missing.
        InvalidEntityError: null join keys or event times.
    """
    columns = join_columns(spec, chunk)
    for name, col in zip(spec.join_keys, columns, strict=True):
        require_present(col, name)
    micros = event_micros(batch_column(chunk, spec.timestamp_field, spec.name))
    created = None
    if spec.created_timestamp_field and spec.created_timestamp_field in chunk.schema.names:
        created_col = chunk.column(chunk.schema.get_field_index(spec.created_timestamp_field))
        if created_col.null_count == 0:
            created = event_micros(created_col)
    codes = key_codes(columns, spec, chunk.num_rows)
    return micros, newest_rows(codes, micros, created)


def encode_rows(
    spec: WriteSpec, chunk: pa.RecordBatch, take: pa.Array | None, micros: np.ndarray
) -> tuple[list[bytes], list[list[bytes]]]:
    """Rows ``take`` of the chunk (every row for None) as stored bytes: the ``_ts`` values,
    then per feature."""
    columns = [batch_column(chunk, f, spec.name) for f in spec.features]
    if take is not None:
        columns, micros = [c.take(take) for c in columns], micros[take.to_numpy()]
    encoded = [encode_values(c, vt) for c, vt in zip(columns, spec.feature_types, strict=True)]
    return encode_timestamps(micros), encoded
