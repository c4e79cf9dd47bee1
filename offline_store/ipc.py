"""Arrow IPC on the wire: what the training-dataset endpoint and its client exchange.

Entity rows go up and feature rows come back as an Arrow IPC *stream*
(``application/vnd.apache.arrow.stream``): schema first, then record batches, so both sides
can process batches as they arrive instead of holding the whole body.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

import pyarrow as pa

from service.errors import InvalidRequestError

ARROW_STREAM = "application/vnd.apache.arrow.stream"


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

    @property
    def complete(self) -> bool:
        """Whether everything was read and it ended with the end-of-stream marker."""
        return self._tail == END_OF_STREAM

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        # Fill the whole buffer unless the chunks run out: pyarrow reads a message body with
        # one read() call and takes a short answer for a truncated stream, and an HTTP
        # response's chunks rarely line up with Arrow messages.
        filled = 0
        while filled < len(buffer):
            if not self._pending:
                try:
                    self._pending = next(self._chunks)
                except StopIteration:
                    break
                continue
            size = min(len(buffer) - filled, len(self._pending))
            buffer[filled : filled + size] = self._pending[:size]
            self._tail = (self._tail + self._pending[:size])[-len(END_OF_STREAM) :]
            self._pending = self._pending[size:]
            filled += size
        return filled
