"""Appending pushed rows to a Parquet source (Feast push with ``to=offline``).

Nothing that is already there is ever rewritten: each push lands as its own immutable
Parquet file, staged under a hidden name that no reader lists, fsynced, then renamed into
place (and the folder fsynced): :mod:`offline_store.parts`. So a reader sees a push whole
or not at all, concurrent pushes from any number of threads and processes keep every
row, and one request can append to several sources all or nothing: :func:`stage_batch`
each, then :func:`~offline_store.parts.commit` them together (or
:func:`~offline_store.parts.discard` them). :func:`write_batch` is both steps for one
source. Where the file goes depends on the source's shape:

- a single file ``data/x.parquet``: into the sibling directory ``data/x.parquet.parts/``,
  which :func:`offline_store.sources.parquet_scan` reads together with the file. Stock
  Feast reads only the file itself until ``featurestore compact`` folds the parts in
  (:mod:`offline_store.compact`). The first push to a missing file creates the file;
- a directory or a glob: next to the other files;
- a hive-partitioned directory (``key=value/`` folders): one new file per partition touched
  (each file is atomic; a reader racing the commit may see one partition's file before
  another's). The partition columns are typed as the view declares them, the others are
  text (:mod:`offline_store.partitions`), never as pyarrow infers them from the folder names
  (``k=0042`` as the int32 42): a pushed ``"0042"`` lands in ``k=0042/``, and a pushed
  value lands in the folder whose name reads back equal to it.

Rows are checked against the source schema first and cast to its types, so a bad push
writes nothing. A table made from a pandas DataFrame whose index is not a plain range (a
filtered frame, as ``FeatureStore.push`` passes it on) carries the index as
``__index_level_N__`` columns: they are dropped, unless the source stores such a column.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import shutil
import uuid
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from feast.value_type import ValueType

from foundation.errors import InvalidRequestError
from offline_store.listing import has_glob, pattern_root, source_files
from offline_store.partitions import arrow_type
from offline_store.parts import (
    StagedBatch,
    StagedFile,
    commit,
    conform,
    discard,
    made_directory,
    part_name,
    parts_directory,
    stage_file,
    temp_path,
    without_pandas_index,
)


def _schema_of(files: list[str]) -> pa.Schema | None:
    # Every file of a source shares its schema (pushes are cast to it), so one file tells.
    return pq.read_schema(sorted(files)[0]) if files else None


def source_schema(
    path: str, *, partition_types: Mapping[str, ValueType] | None = None
) -> pa.Schema | None:
    """The schema pushes to the Parquet source at ``path`` are cast to.

    Args:
        path: resolved source path: a ``.parquet`` file, a directory, or a glob.
        partition_types: the types the feature view declares for a hive source's partition
            columns (:func:`offline_store.partitions.declared_types`); the others are text.

    Returns:
        The schema of the source's files (with a hive source's partition columns), or
        None when the source has no file yet (the first push sets it).
    """
    if has_glob(path):
        return _schema_of(source_files(path))
    if os.path.isdir(path) and _is_hive(path):
        return _hive_dataset(path, partition_types).schema
    if os.path.isdir(path):
        return _schema_of(source_files(path))
    return pq.read_schema(path) if os.path.exists(path) else None


def _is_hive(directory: str) -> bool:
    return any("=" in entry.name for entry in os.scandir(directory) if entry.is_dir())


def _hive_dataset(directory: str, types: Mapping[str, ValueType] | None) -> ds.FileSystemDataset:
    """A hive source with its partition columns typed as declared, the others text.

    pyarrow finds the partition folders; the types it would infer from their names are
    replaced (the listing is reused, not repeated).
    """
    found = ds.dataset(directory, format="parquet", partitioning="hive")
    assert found.partitioning is not None
    declared = types or {}
    names = found.partitioning.schema.names
    schema = pa.schema([(name, arrow_type(declared.get(name))) for name in names])
    return ds.dataset(
        found.files,
        format="parquet",
        partitioning=ds.partitioning(schema, flavor="hive"),
        partition_base_dir=directory,
    )


def _fit(table: pa.Table, schema: pa.Schema | None, where: str) -> pa.Table:
    """The rows as the source stores them (as given while the source has no file)."""
    table = without_pandas_index(table, keep=schema.names if schema is not None else ())
    return conform(table, schema, where) if schema is not None else table


def _stage_hive(
    directory: str, table: pa.Table, types: Mapping[str, ValueType] | None
) -> StagedBatch:
    """One file per partition touched: split outside the source, then each moved into its
    partition folder under a hidden name."""
    dataset = _hive_dataset(directory, types)
    partitioning = dataset.partitioning
    assert partitioning is not None
    conformed = _fit(table, dataset.schema, directory)
    parent = os.path.dirname(os.path.abspath(directory))
    staging = os.path.join(parent, f".{os.path.basename(directory)}.staging-{uuid.uuid4().hex}")
    batch = StagedBatch(directory, hive=True)
    try:
        ds.write_dataset(
            conformed,
            staging,
            format="parquet",
            partitioning=ds.partitioning(partitioning.schema, flavor="hive"),
            basename_template="part-{i}.parquet",
        )
        for staged in sorted(glob.glob(os.path.join(staging, "**", "*.parquet"), recursive=True)):
            relative = os.path.dirname(os.path.relpath(staged, staging))
            target_dir = os.path.join(directory, relative)
            batch.new_directories += made_directory(target_dir)
            with open(staged, "rb") as handle:
                os.fsync(handle.fileno())
            tmp = temp_path(target_dir)
            # Same file system (a sibling of the source): the rename is atomic.
            os.replace(staged, tmp)
            batch.files.append(StagedFile(tmp, target_dir))
    except BaseException:
        discard([batch])
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return batch


def stage_batch(
    path: str, table: pa.Table, *, partition_types: Mapping[str, ValueType] | None = None
) -> StagedBatch:
    """The first step of an append: the rows written and fsynced where no reader sees them.

    Args:
        path: resolved source path: a ``.parquet`` file, a directory, or a glob.
        table: the rows; columns in any order, cast to the source's types.
        partition_types: the types the feature view declares for a hive source's partition
            columns (:func:`offline_store.partitions.declared_types`): a value that is not
            of its column's type is refused; undeclared columns take any value as text.

    Returns:
        What :func:`~offline_store.parts.commit` makes visible, or
        :func:`~offline_store.parts.discard` removes.

    Raises:
        SchemaMismatchError: the rows do not fit the source schema (nothing staged).
        InvalidRequestError: the source is a glob that a new file name could not match.
        OSError: writing failed (disk full, permissions); nothing is left staged.
    """
    if has_glob(path):
        directory = pattern_root(path)
        probe = os.path.join(directory, part_name())
        if not fnmatch.fnmatch(probe, path.replace("**/", "*")):
            raise InvalidRequestError(
                f"cannot append to glob source {path!r}: a new file in {directory!r} would not "
                "match it; point the FileSource at a directory or a '*.parquet' glob",
            )
        return stage_file(path, directory, _fit(table, _schema_of(source_files(path)), path))
    if os.path.isdir(path) and _is_hive(path):
        return _stage_hive(path, table, partition_types)
    if os.path.isdir(path):
        return stage_file(path, path, _fit(table, _schema_of(source_files(path)), path))
    if os.path.exists(path):
        return stage_file(path, parts_directory(path), _fit(table, pq.read_schema(path), path))
    directory = os.path.dirname(path) or "."
    return stage_file(path, directory, _fit(table, None, path), create=path)


def write_batch(
    path: str, table: pa.Table, *, partition_types: Mapping[str, ValueType] | None = None
) -> str:
    """Append ``table`` to the Parquet source at ``path`` as a new immutable file.

    This is what Feast's ``FeatureStore.push`` (``to=offline``) ends up calling through
    ``DuckDBParquetOfflineStore.offline_write_batch``; call it directly with a resolved
    path when no Feast store is at hand. Safe to call from many threads and processes at
    once.

    Args:
        path: resolved source path: a ``.parquet`` file, a directory, or a glob.
        table: the rows; columns in any order, cast to the source's types.
        partition_types: as for :func:`stage_batch`.

    Returns:
        The file written (for hive-partitioned sources, the source directory).

    Raises:
        SchemaMismatchError: the rows do not fit the source schema.
        InvalidRequestError: the source is a glob that a new file name could not match.
        OSError: writing failed; nothing was appended.
    """
    batch = stage_batch(path, table, partition_types=partition_types)
    commit([batch])
    return batch.source if batch.hive else batch.landed[0]
