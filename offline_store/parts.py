"""Immutable part files of a Parquet source, landed all or none.

Rows are first conformed to the source schema (:func:`conform`; a pandas index stored as
columns is dropped: :func:`without_pandas_index`), then landed in two steps:

1. :func:`stage_file` writes them under a hidden temp name (``.push-<uuid>.tmp``) in the
   folder where they will land and fsyncs them. No reader reads a staged file:
   :func:`offline_store.listing.source_files`, the one list both the DuckDB and the Spark
   store read, leaves out names starting with ``.`` (as pyarrow, stock Feast's reader,
   does), and no ``*.parquet`` glob matches the name.
2. :func:`commit` renames every staged file of one or more batches to its final name (a
   rename writes no data: a full disk fails the stage, not this) and fsyncs the folders;
   :func:`discard` removes staged files instead. A commit that fails removes the files it
   had already renamed and discards the rest, so its batches leave nothing behind (a
   reader may have seen a renamed file for that moment).

A process killed between the steps leaves hidden temp files that nothing reads;
compaction removes those older than :data:`STALE_STAGE_SECONDS` (:func:`remove_stale_stages`). Final
names are ``part-<unix ns>-<uuid>.parquet`` with the time taken just before the rename, so
a batch that lands later sorts later and wins exact (event_ts, created_ts) ties in the
point-in-time join and the pulls (which order rows by file name, then row number).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from foundation.errors import SchemaMismatchError
from offline_store.listing import PARTS_SUFFIX

# pyarrow's names for the levels of a pandas index stored as columns.
_PANDAS_INDEX = re.compile(r"__index_level_\d+__")


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


def without_pandas_index(table: pa.Table, *, keep: Collection[str] = ()) -> pa.Table:
    """``table`` without the ``__index_level_N__`` columns of a pandas index.

    ``pa.Table.from_pandas(df)``, which Feast's ``FeatureStore.push`` runs, stores an index
    that is not a plain range (a filtered or sorted frame's) as such columns: they are
    not the rows' data.

    Args:
        table: the rows.
        keep: names to keep all the same (a source that stores such a column).

    Returns:
        The table without those columns; its pandas metadata no longer names them, so the
        file reads back into pandas with a default index.
    """
    index = [n for n in table.column_names if _PANDAS_INDEX.fullmatch(n) and n not in keep]
    if not index:
        return table
    table = table.drop_columns(index)
    metadata = dict(table.schema.metadata or {})
    if b"pandas" in metadata:
        pandas = json.loads(metadata[b"pandas"])
        pandas["index_columns"] = [c for c in pandas.get("index_columns", []) if c not in index]
        pandas["columns"] = [
            c for c in pandas.get("columns", []) if c.get("field_name") not in index
        ]
        metadata[b"pandas"] = json.dumps(pandas).encode()
    return table.replace_schema_metadata(metadata)


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


# A staged file older than this belongs to a push that died between stage and commit: a
# live push commits within seconds of staging.
STALE_STAGE_SECONDS = 3600
_STAGED = re.compile(r"\.push-[0-9a-f]{32}\.tmp")


def remove_stale_stages(directory: str, *, now: float | None = None) -> int:
    """Remove staged files left in ``directory`` by pushes that never committed.

    Returns:
        How many were removed.
    """
    cutoff = (time.time() if now is None else now) - STALE_STAGE_SECONDS
    removed = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            if _STAGED.fullmatch(entry.name) and entry.stat().st_mtime < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)
                    removed += 1
    return removed


def temp_path(directory: str) -> str:
    """A new hidden name in ``directory`` that no reader's listing or glob takes."""
    return os.path.join(directory, f".push-{uuid.uuid4().hex}.tmp")


def made_directory(directory: str) -> list[str]:
    """Create ``directory`` if needed; ``[directory]`` when this call created it."""
    if os.path.isdir(directory):
        return []
    os.makedirs(directory, exist_ok=True)
    return [directory]


def publish(directory: str, table: pa.Table, *, name: str | None = None) -> str:
    """Land ``table`` in ``directory`` as one new immutable Parquet file, in one go.

    Args:
        directory: where the file goes (created if needed).
        table: the rows, already conformed to the source schema.
        name: the final file name; default :func:`part_name` taken just before the rename.

    Returns:
        The path of the new file.
    """
    os.makedirs(directory, exist_ok=True)
    tmp = temp_path(directory)
    write_durable(table, tmp)
    dest = os.path.join(directory, name or part_name())
    os.replace(tmp, dest)
    fsync_directory(directory)
    return dest


@dataclass(frozen=True, slots=True)
class StagedFile:
    """One file written and fsynced under a hidden name.

    Attributes:
        tmp: its hidden path, inside ``directory``.
        directory: the folder it lands in.
        create: the single-file source this file becomes, when it does not exist yet
            (linked, never replacing one that another push created meanwhile).
    """

    tmp: str
    directory: str
    create: str | None = None


@dataclass(slots=True)
class StagedBatch:
    """One push to one source, written and fsynced where no reader sees it yet.

    Attributes:
        source: the resolved source path.
        hive: the source is hive-partitioned (one file per partition touched).
        files: the staged files.
        new_directories: folders staging created (their parents are fsynced on commit).
        landed: the files :func:`commit` renamed into place, in order.
        failed: a :func:`commit` failed while landing or syncing this batch's files.
    """

    source: str
    hive: bool = False
    files: list[StagedFile] = field(default_factory=list)
    new_directories: list[str] = field(default_factory=list)
    landed: list[str] = field(default_factory=list)
    failed: bool = False


def stage_file(
    source: str, directory: str, table: pa.Table, *, create: str | None = None
) -> StagedBatch:
    """Stage ``table`` as one file landing in ``directory`` (created if needed).

    Args:
        source: the resolved source path.
        directory: the folder the file lands in.
        table: the rows, conformed to the source schema.
        create: the single-file source the file becomes, when there is none yet.

    Raises:
        OSError: writing failed; nothing is left staged.
    """
    batch = StagedBatch(source, new_directories=made_directory(directory))
    tmp = temp_path(directory)
    write_durable(table, tmp)
    batch.files.append(StagedFile(tmp, directory, create))
    return batch


def _land(staged: StagedFile, landed: list[str]) -> None:
    """Rename one staged file into place and note where it is now."""
    if staged.create is None:
        dest = os.path.join(staged.directory, part_name())
        os.replace(staged.tmp, dest)
        landed.append(dest)
        return
    try:
        os.link(staged.tmp, staged.create)  # unlike rename, never replaces a file
        landed.append(staged.create)
    except FileExistsError:
        # Another push created the source since this one was staged: land as its part.
        schema = pq.read_schema(staged.create)
        rows = conform(pq.read_table(staged.tmp), schema, staged.create)
        landed.append(publish(parts_directory(staged.create), rows))
    with contextlib.suppress(OSError):  # a hidden leftover is read by nobody
        os.remove(staged.tmp)


def _sync(batch: StagedBatch, done: set[str]) -> None:
    folders = [s.directory for s in batch.files]
    folders += [os.path.dirname(os.path.abspath(d)) for d in batch.new_directories]
    for folder in folders:
        if folder not in done:
            fsync_directory(folder)
            done.add(folder)


def commit(batches: Sequence[StagedBatch]) -> None:
    """Make staged batches visible, all of them or none.

    Every staged file is renamed to its final name (taken just before its rename), then
    every folder written to is fsynced.

    Args:
        batches: from :func:`stage_file` (or its callers), not committed or discarded.

    Raises:
        OSError: a rename or an fsync failed. The files already renamed are removed again
            and the staged rest discarded; the batch it failed on has ``failed`` set.
        SchemaMismatchError: a file created by another push since staging has a schema
            the rows do not fit (removed the same way).
    """
    current: StagedBatch | None = None
    try:
        for current in batches:
            for staged in current.files:
                _land(staged, current.landed)
        done: set[str] = set()
        for current in batches:
            _sync(current, done)
    except BaseException:
        if current is not None:
            current.failed = True
        for batch in batches:
            for path in batch.landed:
                with contextlib.suppress(OSError):
                    os.remove(path)
            batch.landed.clear()
        discard(batches)
        raise


def discard(batches: Sequence[StagedBatch]) -> None:
    """Remove the staged files of ``batches`` that were not renamed (best effort)."""
    for batch in batches:
        for staged in batch.files:
            with contextlib.suppress(OSError):
                os.remove(staged.tmp)
