"""Arrow IPC on the wire: what the training-dataset endpoint and its client exchange.

Entity rows go up and feature rows come back as an Arrow IPC *stream*
(``application/vnd.apache.arrow.stream``): schema first, then record batches, so both sides
can process batches as they arrive instead of holding the whole body.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Iterator

import pyarrow as pa

from foundation.errors import InvalidRequestError, RequestTooLargeError

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def too_many_entity_rows(max_rows: int) -> RequestTooLargeError:
    """The 413 for a training request over its entity row limit, however the rows came."""
    return RequestTooLargeError(
        f"more than {max_rows} entity rows in one training request "
        "(FEATURESTORE_MAX_TRAINING_ENTITY_ROWS); split the entity rows into smaller requests",
        limit=max_rows,
        setting="FEATURESTORE_MAX_TRAINING_ENTITY_ROWS",
    )


def table_to_ipc(table: pa.Table) -> bytes:
    """Serialize a table as one Arrow IPC stream."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def ipc_to_table(data: bytes) -> pa.Table:
    """Parse an Arrow IPC stream.

    Raises:
        InvalidRequestError: the bytes are not an Arrow IPC stream.
    """
    try:
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise InvalidRequestError(
            f"request body is not an Arrow IPC stream ({exc}); send the entity rows with "
            f"Content-Type {ARROW_STREAM} (pyarrow.ipc.new_stream)",
        ) from exc


class _FlatTable:
    """Just enough of a FlatBuffers table reader for Arrow's ``Message`` metadata.

    Arrow IPC metadata is a FlatBuffer (format/Message.fbs); reading three fields of it here
    avoids a dependency for a check that must run before pyarrow decompresses anything.
    """

    def __init__(self, buf: memoryview, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_size = struct.unpack_from("<H", buf, self.vtable)[0]

    def _offset(self, slot: int) -> int:
        at = 4 + 2 * slot
        if at >= self.vtable_size:
            return 0
        return int(struct.unpack_from("<H", self.buf, self.vtable + at)[0])

    def scalar(self, slot: int, fmt: str) -> int:
        off = self._offset(slot)
        return int(struct.unpack_from(fmt, self.buf, self.pos + off)[0]) if off else 0

    def _target(self, slot: int) -> int | None:
        off = self._offset(slot)
        if not off:
            return None
        at = self.pos + off
        return at + int(struct.unpack_from("<I", self.buf, at)[0])

    def table(self, slot: int) -> _FlatTable | None:
        at = self._target(slot)
        return None if at is None else _FlatTable(self.buf, at)

    def struct_vector(self, slot: int, size: int) -> list[int]:
        at = self._target(slot)
        if at is None:
            return []
        count = int(struct.unpack_from("<I", self.buf, at)[0])
        if at + 4 + count * size > len(self.buf):
            # A forged count must not make us build a list of billions of offsets.
            raise struct.error(f"vector of {count} entries runs past the metadata")
        return [at + 4 + i * size for i in range(count)]


# Message.fbs: Message{version, header_type, header, bodyLength}; MessageHeader union values;
# RecordBatch{length, nodes, buffers, compression}; DictionaryBatch{id, data}.
_HEADER_TYPE, _HEADER = 1, 2
_DICTIONARY_BATCH, _RECORD_BATCH = 2, 3
_BATCH_LENGTH, _BATCH_BUFFERS, _BATCH_COMPRESSION = 0, 2, 3
_DICTIONARY_DATA = 1


def _batch_cost(message: pa.ipc.Message) -> tuple[int, int]:
    """Rows and decompressed bytes of a record or dictionary batch, read before decoding.

    A compressed IPC buffer starts with its uncompressed length (int64, -1 = stored raw), so
    the decompressed size is known from the message without decompressing it.
    """
    meta = memoryview(message.metadata)
    root = _FlatTable(meta, struct.unpack_from("<I", meta, 0)[0])
    batch = root.table(_HEADER)
    kind = root.scalar(_HEADER_TYPE, "<B")
    if kind == _DICTIONARY_BATCH and batch is not None:
        batch = batch.table(_DICTIONARY_DATA)
    if kind not in (_DICTIONARY_BATCH, _RECORD_BATCH) or batch is None:
        return 0, 0
    rows = batch.scalar(_BATCH_LENGTH, "<q")
    compressed = batch.table(_BATCH_COMPRESSION) is not None
    body = memoryview(message.body) if message.body is not None else memoryview(b"")
    total = 0
    for at in batch.struct_vector(_BATCH_BUFFERS, 16):
        offset, length = struct.unpack_from("<qq", meta, at)
        if length <= 0:
            continue
        if not compressed:
            total += length
            continue
        (raw,) = struct.unpack_from("<q", body, offset)
        total += length - 8 if raw == -1 else raw
    return rows, total


def read_bounded_ipc(data: bytes, *, max_bytes: int, max_rows: int) -> pa.Table:
    """Parse an uploaded Arrow IPC stream, refusing it before it can blow up in memory.

    Every batch's row count and decompressed size are read from the stream's metadata first;
    only a stream within both limits is decoded, and then validated in full, so a few KB of
    ZSTD that would inflate to gigabytes, or offsets pointing outside their buffers, never
    reach memory or DuckDB.

    Args:
        data: the request body.
        max_bytes: the most bytes the decoded batches may take.
        max_rows: the most rows.

    Returns:
        The table.

    Raises:
        InvalidRequestError: not an Arrow IPC stream, or malformed.
        RequestTooLargeError: over ``max_bytes`` decoded or ``max_rows`` rows.
    """
    rows = size = 0
    try:
        messages = pa.ipc.MessageReader.open_stream(pa.py_buffer(data))
        for message in messages:
            batch_rows, batch_bytes = _batch_cost(message)
            rows += batch_rows
            size += batch_bytes
            if size > max_bytes:
                raise RequestTooLargeError(
                    f"the entity rows decode to more than {max_bytes} bytes "
                    "(FEATURESTORE_MAX_TRAINING_UPLOAD_BYTES); send fewer rows per request",
                    limit=max_bytes,
                    setting="FEATURESTORE_MAX_TRAINING_UPLOAD_BYTES",
                )
            if rows > max_rows:
                raise too_many_entity_rows(max_rows)
        table = ipc_to_table(data)
        table.validate(full=True)
    except (pa.ArrowInvalid, OSError, struct.error, IndexError) as exc:
        raise InvalidRequestError(
            f"request body is not a valid Arrow IPC stream ({exc}); send the entity rows "
            f"with Content-Type {ARROW_STREAM} (pyarrow.ipc.new_stream)",
        ) from exc
    return table


def ipc_chunks(schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> Iterator[bytes]:
    """Encode batches as consecutive pieces of one IPC stream (schema first, end marker last)."""
    sink = io.BytesIO()
    writer = pa.ipc.new_stream(sink, schema)

    def drain() -> bytes:
        data = sink.getvalue()
        sink.seek(0)
        sink.truncate()
        return data

    yield drain()
    for batch in batches:
        writer.write_batch(batch)
        yield drain()
    writer.close()
    yield drain()


# What ``RecordBatchStreamWriter.close()`` writes last: continuation marker, zero length.
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"


class ChunkReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks, for ``pyarrow.ipc.open_stream``.

    Arrow readers accept a stream that simply stops, so a response cut after some batches
    would look complete; :attr:`complete` tells whether the writer's end marker arrived.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""
        self._tail = b""
        self._exhausted = False

    @property
    def complete(self) -> bool:
        """Whether everything was read and it ended with the end-of-stream marker."""
        return self._exhausted and self._tail == END_OF_STREAM

    @property
    def cut(self) -> bool:
        """Whether the chunks ran out without the end-of-stream marker (a cut response)."""
        return self._exhausted and self._tail != END_OF_STREAM

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        # Fill the whole buffer unless the chunks run out: pyarrow takes a short read for
        # the end of the stream, and network chunks (~64 KB) are smaller than big batches.
        filled = 0
        while filled < len(buffer):
            if not self._pending:
                try:
                    self._pending = next(self._chunks)
                except StopIteration:
                    self._exhausted = True
                    break
                continue
            size = min(len(buffer) - filled, len(self._pending))
            buffer[filled : filled + size] = self._pending[:size]
            self._tail = (self._tail + self._pending[:size])[-len(END_OF_STREAM) :]
            self._pending = self._pending[size:]
            filled += size
        return filled
