"""Folding pushed parts back into a source (``featurestore compact``).

Pushes never rewrite a source (:mod:`offline_store.writes`), so a busy push source
collects many small files. Compaction merges them:

- a single-file source ``x.parquet``: the file and every part in ``x.parquet.parts/``, in
  name order, are streamed into a new ``x.parquet`` (temp name, fsync, atomic rename);
  then the merged parts are deleted. Afterwards stock Feast sees every row again.
- a plain directory source: the ``part-*.parquet`` files become one part whose name sorts
  where the last merged one did, then the merged ones are deleted.

Pushes need no lock: compaction merges only the parts it listed and deletes only those,
so a part landing meanwhile stays for the next run. Two compactions of one source take
turns on an exclusive ``flock``. Crash safety: before the merged file is published a
journal names the parts it contains and the merged file's id (kept in its Parquet
metadata); the next compaction finishes the deletions when the published file carries
that id, else drops the journal. A query running while a compaction publishes can see
the merged rows twice for that moment (identical rows: joins and latest-pulls answer the
same) or fail on a part deleted under it; run compaction when no long read is going on.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import pyarrow.parquet as pq
from feast import FeatureStore
from feast.infra.offline_stores.file_source import FileSource

from foundation.errors import FeatureViewNotFoundError, InvalidRequestError
from foundation.registry import stored_feature_views
from offline_store.parts import fsync_directory, part_name, parts_directory, remove_stale_stages
from offline_store.sources import resolve_path

_ID_KEY = b"featurestore.compaction_id"
_JOURNAL = ".compaction.json"
_PART = re.compile(r"part-(\d{20})-[0-9a-z]+\.parquet")


def _our_parts(directory: str) -> list[str]:
    """The files pushes (and compactions) wrote in ``directory``, in landing order."""
    names = sorted(n for n in os.listdir(directory) if _PART.fullmatch(n))
    return [os.path.join(directory, n) for n in names]


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What one compaction did.

    Attributes:
        source: the resolved source path.
        parts_merged: parts folded in (0: nothing to do).
        rows: rows in the file written (0 when nothing was merged).
    """

    source: str
    parts_merged: int
    rows: int


@contextmanager
def _exclusive(lock_path: str) -> Iterator[None]:
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _file_id(path: str) -> str | None:
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, ValueError):
        return None
    raw = metadata.get(_ID_KEY)
    return raw.decode() if raw is not None else None


def _recover(directory: str, published: str) -> None:
    """Finish or drop the journal an interrupted compaction left behind."""
    journal = os.path.join(directory, _JOURNAL)
    try:
        with open(journal, encoding="utf-8") as handle:
            entry = json.load(handle)
    except FileNotFoundError:
        return
    target = entry.get("published") or published
    if _file_id(target) == entry.get("id"):
        for name in entry.get("parts", []):
            with suppress(FileNotFoundError):
                os.remove(os.path.join(directory, os.path.basename(name)))
    os.remove(journal)
    fsync_directory(directory)


def _merge(inputs: list[str], dest_dir: str, final: str, compaction_id: str) -> int:
    """Stream ``inputs`` (in order) into ``final`` via a temp file; return the rows written."""
    schema = pq.read_schema(inputs[0])
    metadata = {**(schema.metadata or {}), _ID_KEY: compaction_id.encode()}
    schema = schema.with_metadata(metadata)
    tmp = os.path.join(dest_dir, f".compact-{uuid.uuid4().hex}.tmp")
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for path in inputs:
                source = pq.ParquetFile(path)
                try:
                    for i in range(source.num_row_groups):
                        group = source.read_row_group(i).select(schema.names).cast(schema)
                        writer.write_table(group)
                        rows += group.num_rows
                finally:
                    source.close()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    except BaseException:
        with suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    return rows


def _compact(directory: str, base: str | None, parts: list[str], final: str) -> int:
    journal = os.path.join(directory, _JOURNAL)
    compaction_id = uuid.uuid4().hex
    with open(journal, "w", encoding="utf-8") as handle:
        json.dump({"id": compaction_id, "published": final, "parts": parts}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    fsync_directory(directory)
    inputs = ([base] if base is not None else []) + parts
    rows = _merge(inputs, directory if base is None else os.path.dirname(base), final,
                  compaction_id)  # fmt: skip
    fsync_directory(os.path.dirname(final))
    _recover(directory, final)
    return rows


def compact(path: str) -> CompactionResult:
    """Merge the pushed parts of the Parquet source at ``path``.

    Args:
        path: resolved source path: a ``.parquet`` file or a plain directory.

    Returns:
        What was merged.

    Raises:
        InvalidRequestError: a glob, hive-partitioned or remote source, or no such path.
    """
    if "://" in path or any(ch in path for ch in "*?["):
        raise InvalidRequestError(
            f"cannot compact {path!r}: only local single-file and directory sources are "
            "compacted; glob and remote sources keep their files",
            source=path,
        )
    if os.path.isfile(path):
        directory = parts_directory(path)
        remove_stale_stages(os.path.dirname(os.path.abspath(path)))  # a first push's stage
        if not os.path.isdir(directory):
            return CompactionResult(path, 0, 0)
        with _exclusive(directory + ".lock"):
            _recover(directory, path)
            remove_stale_stages(directory)
            parts = _our_parts(directory)
            if not parts:
                return CompactionResult(path, 0, 0)
            rows = _compact(directory, path, parts, path)
        return CompactionResult(path, len(parts), rows)
    if os.path.isdir(path):
        if any("=" in entry.name for entry in os.scandir(path) if entry.is_dir()):
            raise InvalidRequestError(
                f"cannot compact {path!r}: hive-partitioned sources are not compacted",
                source=path,
            )
        with _exclusive(os.path.join(path, ".compaction.lock")):
            _recover(path, "")
            remove_stale_stages(path)
            parts = _our_parts(path)
            if len(parts) < 2:
                return CompactionResult(path, 0, 0)
            # Same time stamp as the newest merged part, and a tag sorting after every
            # uuid: the merged file takes that part's place in "source order".
            match = _PART.fullmatch(os.path.basename(parts[-1]))
            assert match is not None
            newest_ns = int(match.group(1))
            final = os.path.join(path, part_name(newest_ns, tag="z"))
            rows = _compact(path, None, parts, final)
        return CompactionResult(path, len(parts), rows)
    raise InvalidRequestError(f"no Parquet source at {path!r}", source=path)


def compact_feature_views(
    store: FeatureStore, feature_views: Sequence[str] | None = None
) -> list[CompactionResult]:
    """Compact the Parquet sources of a Feast store's feature views (the SDK entry point).

    Args:
        store: the Feast store; relative source paths resolve against its repo.
        feature_views: names to compact; default every view with a local FileSource.

    Returns:
        One result per distinct source, in view order.

    Raises:
        FeatureViewNotFoundError: an unknown view name.
        InvalidRequestError: a named view's source cannot be compacted.
    """
    views = {fv.name: fv for fv in stored_feature_views(store)}
    if feature_views is not None:
        unknown = sorted(set(feature_views) - set(views))
        if unknown:
            raise FeatureViewNotFoundError(
                f"feature view(s) {unknown} not in project {store.project!r}; known views: "
                f"{sorted(views)}",
                feature_view=unknown[0],
            )
        chosen = [views[name] for name in feature_views]
    else:
        chosen = [fv for fv in views.values() if isinstance(fv.batch_source, FileSource)]
    results: list[CompactionResult] = []
    done: set[str] = set()
    for fv in chosen:
        source = fv.batch_source
        if not isinstance(source, FileSource):
            raise InvalidRequestError(
                f"feature view {fv.name!r} reads {type(source).__name__}; only Parquet "
                "FileSources are compacted",
                feature_view=fv.name,
            )
        path = resolve_path(store.config.repo_path, source.path)
        if path in done or (feature_views is None and not _compactable(path)):
            continue
        done.add(path)
        results.append(compact(path))
    return results


def _compactable(path: str) -> bool:
    if "://" in path or any(ch in path for ch in "*?["):
        return False
    if os.path.isfile(path):
        return True
    return os.path.isdir(path) and not any(
        "=" in entry.name for entry in os.scandir(path) if entry.is_dir()
    )
