"""Appending pushed rows to a Parquet source (Feast push with ``to=offline``).

Nothing that is already there is ever rewritten: each push lands as its own immutable
Parquet file, written under a temp name that no reader matches, fsynced, then renamed
into place (and the directory fsynced), so a reader sees a push whole or not at all and
concurrent pushes from any number of threads and processes keep every row. Where the
file goes depends on the source's shape:

- a single file ``data/x.parquet``: into the sibling directory ``data/x.parquet.parts/``,
  which :func:`offline_store.sources.parquet_scan` reads together with the file. Stock
  Feast reads only the file itself until ``featurestore compact`` folds the parts in
  (:mod:`offline_store.compact`);
- a directory or a glob: next to the other files;
- a hive-partitioned directory (``key=value/`` folders): one new file per partition touched
  (each file is atomic; a reader racing the push may see one partition's file before
  another's).

Files are named ``part-<unix ns>-<uuid>.parquet`` with the time taken just before the
rename, so a push that lands later sorts later and wins exact (event_ts, created_ts) ties in
the point-in-time join and the pulls (which order rows by file name, then row number).
Rows are checked against the source schema first and cast to its types, so a bad push
writes nothing.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import shutil
import time
import uuid

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from foundation.errors import InvalidRequestError, SchemaMismatchError
from offline_store.listing import PARTS_SUFFIX, has_glob, pattern_root, source_files


def parts_directory(path: str) -> str:
    """Where pushes to the single-file source ``path`` land (``<path>.parts``)."""
    return path + PARTS_SUFFIX


def conform(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """Reorder and cast ``table`` to ``schema`` or explain what does not fit.

    Raises:
        SchemaMismatchError: a column missing or unknown, or not castable.
    """
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


def part_name(ns: int | None = None, *, tag: str = "") -> str:
    """``part-<20-digit unix ns>-<tag><uuid8>.parquet``: names sort in landing order."""
    stamp = time.time_ns() if ns is None else ns
    return f"part-{stamp:020d}-{tag}{uuid.uuid4().hex[:8]}.parquet"


def fsync_directory(directory: str) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(table: pa.Table, tmp: str) -> None:
    """Write ``table`` to ``tmp`` and fsync it (the caller renames it into place)."""
    try:
        pq.write_table(table, tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _temp_path(directory: str) -> str:
    # A hidden name without the .parquet suffix: no reader's glob matches it.
    return os.path.join(directory, f".push-{uuid.uuid4().hex}.tmp")


def publish(directory: str, table: pa.Table, *, name: str | None = None) -> str:
    """Land ``table`` in ``directory`` as one new immutable Parquet file.

    Args:
        directory: where the file goes (created if needed).
        table: the rows, already conformed to the source schema.
        name: the final file name; default :func:`part_name` taken just before the rename.

    Returns:
        The path of the new file.
    """
    os.makedirs(directory, exist_ok=True)
    tmp = _temp_path(directory)
    write_durable(table, tmp)
    dest = os.path.join(directory, name or part_name())
    os.replace(tmp, dest)
    fsync_directory(directory)
    return dest


def _schema_of(files: list[str]) -> pa.Schema | None:
    # Every file of a source shares its schema (pushes are cast to it), so one file tells.
    return pq.read_schema(sorted(files)[0]) if files else None


def source_schema(path: str) -> pa.Schema | None:
    """The schema pushes to the Parquet source at ``path`` are cast to.

    Args:
        path: resolved source path: a ``.parquet`` file, a directory, or a glob.

    Returns:
        The schema of the source's files (with a hive source's partition columns), or
        None when the source has no file yet (the first push sets it).
    """
    if has_glob(path):
        return _schema_of(source_files(path))
    if os.path.isdir(path) and _is_hive(path):
        return ds.dataset(path, format="parquet", partitioning="hive").schema
    if os.path.isdir(path):
        return _schema_of(source_files(path))
    return pq.read_schema(path) if os.path.exists(path) else None


def _is_hive(directory: str) -> bool:
    return any("=" in entry.name for entry in os.scandir(directory) if entry.is_dir())


def _write_hive(directory: str, table: pa.Table) -> str:
    """One new file per partition touched, each staged outside the source then renamed in."""
    dataset = ds.dataset(directory, format="parquet", partitioning="hive")
    partitioning = dataset.partitioning
    assert partitioning is not None
    conformed = conform(table, dataset.schema, directory)
    parent = os.path.dirname(os.path.abspath(directory))
    staging = os.path.join(parent, f".{os.path.basename(directory)}.staging-{uuid.uuid4().hex}")
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
            os.makedirs(target_dir, exist_ok=True)
            with open(staged, "rb") as handle:
                os.fsync(handle.fileno())
            # Same file system (a sibling of the source): the rename is atomic.
            os.replace(staged, os.path.join(target_dir, part_name()))
            fsync_directory(target_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _write_first_file(path: str, table: pa.Table) -> str:
    """Create a single-file source; if another push created it first, land as a part."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = _temp_path(directory)
    write_durable(table, tmp)
    try:
        os.link(tmp, path)  # unlike rename, never replaces a file another push just made
    except FileExistsError:
        schema = pq.read_schema(path)
        return publish(parts_directory(path), conform(table, schema, path))
    finally:
        os.remove(tmp)
    fsync_directory(directory)
    return path


def write_batch(path: str, table: pa.Table) -> str:
    """Append ``table`` to the Parquet source at ``path`` as a new immutable file.

    This is what the HTTP ``/push`` (``to=offline``) ends up calling through Feast's
    ``FeatureStore.push`` -> ``DuckDBParquetOfflineStore.offline_write_batch``; call it
    directly with a resolved path when no Feast store is at hand. Safe to call from many
    threads and processes at once.

    Args:
        path: resolved source path: a ``.parquet`` file, a directory, or a glob.
        table: the rows; columns in any order, cast to the source's types.

    Returns:
        The file written (for hive-partitioned sources, the source directory).

    Raises:
        SchemaMismatchError: the rows do not fit the source schema.
        InvalidRequestError: the source is a glob that a new file name could not match.
    """
    if has_glob(path):
        schema = _schema_of(source_files(path))
        conformed = conform(table, schema, path) if schema is not None else table
        directory = pattern_root(path)
        probe = os.path.join(directory, part_name())
        if not fnmatch.fnmatch(probe, path.replace("**/", "*")):
            raise InvalidRequestError(
                f"cannot append to glob source {path!r}: a new file in {directory!r} would not "
                "match it; point the FileSource at a directory or a '*.parquet' glob",
            )
        return publish(directory, conformed)
    if os.path.isdir(path) and _is_hive(path):
        return _write_hive(path, table)
    if os.path.isdir(path):
        schema = _schema_of(source_files(path))
        conformed = conform(table, schema, path) if schema is not None else table
        return publish(path, conformed)
    if os.path.exists(path):
        conformed = conform(table, pq.read_schema(path), path)
        return publish(parts_directory(path), conformed)
    return _write_first_file(path, table)
