"""Appending pushed rows to a Parquet source (Feast push with ``to=offline``).

Parquet files cannot be appended in place, so the shape of the source decides:

- a hive-partitioned directory (``key=value/`` folders): one new file per partition touched;
- a directory or a glob: the rows become one new file next to the others, named
  ``part-<unix ns>-<uuid>.parquet`` so that newer pushes sort after older files (exact ties in
  the point-in-time join go to the later file);
- a single file: the file is rewritten, streaming its row groups then the new rows into a
  temp file that atomically replaces it (memory stays bounded by one row group).

Either way the rows are checked against the source schema first and cast to its types, so a
bad push writes nothing.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import time
import uuid

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from foundation.errors import InvalidRequestError, SchemaMismatchError

_GLOB_CHARS = frozenset("*?[")


def _conform(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """Reorder and cast ``table`` to ``schema`` or explain what does not fit."""
    missing = [n for n in schema.names if n not in table.column_names]
    extra = [n for n in table.column_names if n not in schema.names]
    if missing or extra:
        raise SchemaMismatchError(
            f"pushed rows do not match the schema of {where}: missing columns {missing}, "
            f"unknown columns {extra}; send exactly {schema.names}",
            missing=missing,
            unknown=extra,
        )
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise SchemaMismatchError(
            f"pushed rows cannot be converted to the schema of {where}: {exc}",
        ) from exc


def _new_file_name() -> str:
    return f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"


def _write_new_file(directory: str, table: pa.Table) -> str:
    os.makedirs(directory, exist_ok=True)
    dest = os.path.join(directory, _new_file_name())
    # The temp name does not end in .parquet, so readers globbing the directory skip it.
    tmp = dest + ".tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, dest)
    return dest


def _existing_schema(files: list[str]) -> pa.Schema | None:
    if not files:
        return None
    return ds.dataset(sorted(files), format="parquet").schema


def _rewrite_file(path: str, table: pa.Table) -> str:
    existing = pq.ParquetFile(path)
    schema = existing.schema_arrow
    conformed = _conform(table, schema, path)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for i in range(existing.num_row_groups):
                writer.write_table(existing.read_row_group(i))
            writer.write_table(conformed)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    finally:
        existing.close()
    os.replace(tmp, path)
    return path


def _is_hive(directory: str) -> bool:
    return any("=" in entry.name for entry in os.scandir(directory) if entry.is_dir())


def _write_hive(directory: str, table: pa.Table) -> str:
    """Append to a hive-partitioned directory: one new file per partition touched."""
    dataset = ds.dataset(directory, format="parquet", partitioning="hive")
    partitioning = dataset.partitioning
    assert partitioning is not None
    conformed = _conform(table, dataset.schema, directory)
    # Unlike the single-file case the files appear under their final names as they are
    # written; a reader racing the push may see a partition's new file before the others.
    ds.write_dataset(
        conformed,
        directory,
        format="parquet",
        partitioning=ds.partitioning(partitioning.schema, flavor="hive"),
        basename_template=_new_file_name().replace(".parquet", "-{i}.parquet"),
        existing_data_behavior="overwrite_or_ignore",
    )
    return directory


def write_batch(path: str, table: pa.Table) -> str:
    """Append ``table`` to the Parquet source at ``path``.

    This is what the HTTP ``/push`` (``to=offline``) ends up calling through Feast's
    ``FeatureStore.push`` -> ``DuckDBParquetOfflineStore.offline_write_batch``; call it
    directly with a resolved path when no Feast store is at hand.

    Args:
        path: resolved source path: a ``.parquet`` file, a directory, or a glob.
        table: the rows; columns in any order, cast to the source's types.

    Returns:
        The file written (new file for directories/globs, the rewritten file otherwise).

    Raises:
        SchemaMismatchError: the rows do not fit the source schema.
        InvalidRequestError: the source is a glob that a new file name could not match.
    """
    if any(ch in path for ch in _GLOB_CHARS):
        files = glob.glob(path, recursive=True)
        schema = _existing_schema(files)
        conformed = _conform(table, schema, path) if schema is not None else table
        head = path[: min(path.index(ch) for ch in _GLOB_CHARS if ch in path)]
        directory = head if head.endswith(os.sep) else os.path.dirname(head)
        probe = os.path.join(directory, _new_file_name())
        if not fnmatch.fnmatch(probe, path.replace("**/", "*")):
            raise InvalidRequestError(
                f"cannot append to glob source {path!r}: a new file in {directory!r} would not "
                "match it; point the FileSource at a directory or a '*.parquet' glob",
            )
        return _write_new_file(directory, conformed)
    if os.path.isdir(path) and _is_hive(path):
        return _write_hive(path, table)
    if os.path.isdir(path):
        files = glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True)
        schema = _existing_schema(files)
        conformed = _conform(table, schema, path) if schema is not None else table
        return _write_new_file(path, conformed)
    if os.path.exists(path):
        return _rewrite_file(path, table)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    pq.write_table(table, path)
    return path
