"""Which files a Parquet source reads, and in which order: one answer for every reader.

A FileSource path is a file (read with its pushed parts), a directory (every ``*.parquet``
below it, ``dir/**/*.parquet``) or a glob. Locally, the files are listed here, once, and
both stores read exactly that list: DuckDB (``read_parquet([...])``, the HTTP sandbox's
confined read) and Spark (explicit paths), so a directory with nested folders or a ``**``
glob cannot mean one set of files on one engine and another on the other.

Files and folders whose names start with ``.`` or ``_`` below the path the source names
are not data (``.ipynb_checkpoints/``, ``_temporary/``, ``_SUCCESS``): Spark, Hadoop and
pyarrow (stock Feast's file reader) skip them, and so do we.

Source order, for "a later file wins an exact tie", is the natural sort of the paths
(``part-2`` before ``part-10``): :func:`file_order_key` is the Python twin of the SQL
:data:`offline_store.sources.FILE_ORDER`, and a property test keeps the two equal.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path

from foundation.errors import InvalidRequestError

GLOB_CHARS = frozenset("*?[")
# Pushes to a one-file source land in ``<file>.parts/`` (:mod:`offline_store.writes`).
PARTS_SUFFIX = ".parts"
HIDDEN_PREFIXES = (".", "_")
_RUNS = re.compile(r"[0-9]+|[^0-9]+")
# DuckDB's HUGEINT, which FILE_ORDER casts digit runs to (a longer run becomes NULL there).
_HUGEINT_MAX = 2**127 - 1


def is_remote(path: str) -> bool:
    """Whether a path is a URI (``s3://``, ``gs://``...) rather than a local path."""
    return "://" in path


def has_glob(path: str) -> bool:
    return any(ch in path for ch in GLOB_CHARS)


def parquet_glob(path: str) -> str:
    """The pattern to read for a file, a directory, or a glob.

    Args:
        path: a resolved source path.

    Returns:
        ``path`` itself for files and globs; ``path/**/*.parquet`` for directories.
    """
    if has_glob(path) or is_remote(path):
        return path
    if os.path.isdir(path):
        return os.path.join(path, "**", "*.parquet")
    return path


def parts_pattern(pattern: str) -> str | None:
    """The pushed parts of a single-file source, when it has any.

    Pushes to a source defined as one file ``x.parquet`` land as immutable files in
    ``x.parquet.parts/`` (see :mod:`offline_store.writes`); readers take both.

    Args:
        pattern: what :func:`parquet_glob` returned.

    Returns:
        ``<pattern>.parts/*.parquet`` when ``pattern`` is a local file with parts, else None.
    """
    if is_remote(pattern) or has_glob(pattern):
        return None
    parts = os.path.join(pattern + PARTS_SUFFIX, "*.parquet")
    return parts if glob.glob(parts) else None


def source_patterns(pattern: str) -> list[str]:
    """Every pattern a source is read from: the source itself and its pushed parts."""
    parts = parts_pattern(pattern)
    return [pattern] if parts is None else [pattern, parts]


def is_single_file(read: str | Sequence[str]) -> bool:
    """Whether a read names exactly one local file (no glob, no directory, no parts).

    Every row of such a scan has the same ``filename``, so orderings need not compare it.
    """
    if not isinstance(read, str):
        return len(read) == 1 and is_single_file(read[0])
    return (
        not is_remote(read)
        and not has_glob(read)
        and os.path.isfile(read)
        and parts_pattern(read) is None
    )


def pattern_root(pattern: str) -> str:
    """The part of a pattern before its first wildcard component (the folder it names)."""
    return _split(pattern)[0]


def _split(pattern: str) -> tuple[str, str]:
    """(the folder a glob names, the wildcard rest relative to it)."""
    parts = pattern.split(os.sep)
    cut = next(i for i, part in enumerate(parts) if has_glob(part))
    root = os.sep.join(parts[:cut]) if cut else "."  # "/x" splits as ["", "x"]
    return root or os.sep, os.sep.join(parts[cut:])


def _matches(pattern: str) -> list[str]:
    """What a pattern matches, as DuckDB's glob matches it: ``**`` is any depth but does
    not enter symlinked folders (so a link back up cannot list a file forty times), while
    ``*`` follows them; that is ``pathlib``'s glob, not the ``glob`` module's."""
    if not has_glob(pattern):
        return [pattern] if os.path.isfile(pattern) else []
    root, rest = _split(pattern)
    return [str(p) for p in Path(root).glob(rest)]


def _hidden_below(path: str, root: str) -> bool:
    """Whether a name in ``path`` below ``root`` starts with ``.`` or ``_``."""
    relative = os.path.relpath(path, root)
    return relative != "." and any(p.startswith(HIDDEN_PREFIXES) for p in relative.split(os.sep))


def file_order_key(path: str) -> tuple[tuple[tuple[str, tuple[int, int]], ...], str]:
    """The natural-sort key of a path, equal in order to DuckDB's ``FILE_ORDER, filename``.

    Digit runs compare as numbers (DuckDB's HUGEINT; longer runs after every number, as its
    NULLs sort), other runs as text; the plain path breaks what is left (``a01``, ``a1``).
    """
    runs = []
    for run in _RUNS.findall(path):
        if "0" <= run[0] <= "9":
            number = int(run)
            runs.append(("", (0, number) if number <= _HUGEINT_MAX else (1, 0)))
        else:
            runs.append((run, (0, 0)))
    return tuple(runs), path


def expand_pattern(pattern: str) -> list[str]:
    """The local files a read pattern matches now, pushed parts included, in source order.

    Args:
        pattern: what :func:`parquet_glob` returned (a file, ``dir/**/*.parquet`` or a glob).

    Returns:
        Absolute paths of the matching regular files, hidden names below the pattern's
        root left out, sorted by :func:`file_order_key`.
    """
    files = set()
    for part in source_patterns(pattern):
        root = pattern_root(part) if has_glob(part) else part
        for path in _matches(part):
            if os.path.isfile(path) and not _hidden_below(path, root):
                files.add(os.path.abspath(path))
    return sorted(files, key=file_order_key)


def no_files(source: str, *, entity: bool = False) -> InvalidRequestError:
    """The error for a source (or an entity path) that matches no file, naming the rules
    that could explain it."""
    hidden = "files and folders starting with '.' or '_' below it are not read"
    if entity:
        return InvalidRequestError(
            f"entity path {source!r} matches no Parquet file; check the path ({hidden})"
        )
    return InvalidRequestError(
        f"offline source {source!r} matches no Parquet file; generate the data or fix the "
        f"FileSource path (relative paths resolve against the feature repo; {hidden})",
        source=source,
    )


def source_files(path: str) -> list[str]:
    """Every local Parquet file a source path reads, pushed parts included, in source order.

    Args:
        path: a resolved source path (file, directory or glob).
    """
    return expand_pattern(parquet_glob(path))
