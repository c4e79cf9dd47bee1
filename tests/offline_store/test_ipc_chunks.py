"""Reading an Arrow IPC stream that arrives in chunks unrelated to its messages (HTTP)."""

from __future__ import annotations

import pyarrow as pa

from offline_store.ipc import ChunkReader, table_to_ipc


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_stream_split_into_small_chunks_reads_back_whole_and_complete() -> None:
    table = pa.table({"x": list(range(50_000)), "s": [f"row-{i}" for i in range(50_000)]})
    source = ChunkReader(iter(_chunks(table_to_ipc(table), 1000)))
    got = pa.ipc.open_stream(source).read_all()
    while source.read(1 << 16):
        pass
    assert got.equals(table)
    assert source.complete


def test_stream_cut_short_is_not_complete() -> None:
    data = table_to_ipc(pa.table({"x": list(range(1000))}))
    source = ChunkReader(iter(_chunks(data[:-8], 100)))
    pa.ipc.open_stream(source).read_all()
    assert not source.complete
