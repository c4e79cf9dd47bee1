"""Result checks for ``pit_bench``: against stock Feast, and a spot check against plain SQL.

Both read the Parquet outputs with DuckDB, so they work at any size in bounded memory.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb


def exactness_vs_stock(
    views: list[tuple[str, list[str]]], n_features: int, ours: Path, stock: Path, entity_rows: int
) -> dict[str, Any]:
    """Compare the two outputs by row id with DuckDB (bounded memory, any size)."""
    import duckdb

    con = duckdb.connect()
    feature_cols = {v: [f"{v}_f{i}" for i in range(n_features)] for v, _ in views}
    feats = [f for fs in feature_cols.values() for f in fs]
    differs = " OR ".join(f"o.{f} IS DISTINCT FROM s.{f}" for f in feats)
    returned, mismatched = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {differs}) FROM read_parquet('{stock}') s "
        f"JOIN read_parquet('{ours}') o USING (row_id)"
    ).fetchall()[0]
    some_view_null = " OR ".join(
        "(" + " AND ".join(f"o.{f} IS NULL" for f in fs) + ")" for fs in feature_cols.values()
    )
    # Stock Feast also collapses entity rows sharing join keys and time (#6787): those it
    # drops although a match exists; ours must keep them with the same values as their twin.
    keys = sorted({k for _, ks in views for k in ks} | {"event_timestamp"})
    key_list = ", ".join(keys)
    dropped, dropped_null, dropped_duplicate = con.execute(
        f"WITH o AS (SELECT * FROM read_parquet('{ours}')), "
        f"d AS (SELECT * FROM o ANTI JOIN read_parquet('{stock}') s USING (row_id)), "
        f"dup AS (SELECT {key_list} FROM o GROUP BY ALL HAVING count(*) > 1) "
        f"SELECT count(*), count(*) FILTER (WHERE {some_view_null}), "
        f"count(*) FILTER (WHERE NOT ({some_view_null}) AND ({key_list}) IN (SELECT * FROM dup)) "
        "FROM d o"
    ).fetchall()[0]
    ours_rows, ordered = con.execute(
        f"SELECT count(*), bool_and(row_id = rn) FROM (SELECT row_id, row_number() OVER () - 1 "
        f"AS rn FROM read_parquet('{ours}'))"
    ).fetchall()[0]
    return {
        "entity_rows": entity_rows,
        "ours_rows": ours_rows,
        "ours_in_input_order": bool(ordered),
        "stock_rows": returned,
        "stock_rows_with_different_values": mismatched,
        "rows_stock_dropped": dropped,
        "dropped_rows_null_in_ours": dropped_null,
        "dropped_rows_that_were_duplicates_kept_by_ours": dropped_duplicate,
        "exact": ours_rows == entity_rows
        and mismatched == 0
        and dropped == dropped_null + dropped_duplicate,
    }


def spot_check(
    views: list[tuple[str, list[str], timedelta, Path]],
    n_features: int,
    entities: Path,
    ours: Path,
    sample: int = 2000,
) -> dict[str, Any]:
    """Recompute a random sample of entity rows with a plain join + window and compare.

    The check's formulation is deliberately different from the store's ASOF join: every
    feature row of the sampled keys in the TTL window is joined, then ranked by
    (event_ts desc, created_ts desc) per entity row.
    """
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'").fetchall()
    con.execute(
        f"CREATE TEMP TABLE s AS SELECT * FROM read_parquet('{entities}') "
        f"USING SAMPLE {sample} ROWS (reservoir, 7)"
    ).fetchall()
    mismatches = 0
    for view, keys, ttl, path in views:
        feats = [f"{view}_f{i}" for i in range(n_features)]
        on = " AND ".join(f"f.{k} = s.{k}" for k in keys)
        window = "f.event_timestamp <= s.event_timestamp"
        if ttl > timedelta(0):
            seconds = int(ttl.total_seconds())
            window += f" AND f.event_timestamp >= s.event_timestamp - INTERVAL {seconds} SECOND"
        expected = (
            f"SELECT s.row_id, {', '.join('f.' + c for c in feats)} FROM s JOIN "
            f"read_parquet('{path}') f ON {on} AND {window} "
            "QUALIFY row_number() OVER (PARTITION BY s.row_id "
            "ORDER BY f.event_timestamp DESC, f.created DESC) = 1"
        )
        differs = " OR ".join(f"o.{c} IS DISTINCT FROM x.{c}" for c in feats)
        mismatches += con.execute(
            f"WITH x AS ({expected}) SELECT count(*) FROM s "
            f"JOIN read_parquet('{ours}') o USING (row_id) "
            f"LEFT JOIN x USING (row_id) WHERE {differs}"
        ).fetchall()[0][0]
    checked = con.execute(
        f"SELECT count(*) FROM s JOIN read_parquet('{ours}') o USING (row_id)"
    ).fetchall()[0][0]
    return {"rows_checked": checked, "rows_with_differences": mismatches, "exact": mismatches == 0}
