"""The Spark session the Spark offline store and engine run on, and why it might not start.

pyspark is an optional extra (``pip install 'featurestore[spark]'``) and needs a Java runtime;
both are checked here so that a missing one is a clear :class:`FeatureStoreError` naming the fix
instead of an ``ImportError`` or a JVM gateway traceback.

Whatever session is used (an active one, e.g. a notebook's or a test's, or a new one built from
``spark_conf``), three SQL settings are forced because the exactness contract depends on them:

- ``spark.sql.session.timeZone=UTC``: naive timestamps mean UTC, as in the DuckDB store;
- ``spark.sql.legacy.parquet.nanosAsLong=true``: Parquet files written by pandas hold
  ``TIMESTAMP(NANOS)`` columns, which Spark refuses by default; read as int64 nanoseconds,
  :mod:`offline_store.spark_sources` converts them back to timestamps;
- ``spark.sql.parquet.inferTimestampNTZ.enabled=false``: naive Parquet timestamps read as
  instants (UTC), like DuckDB's ``CAST(... AS TIMESTAMPTZ)``;
- ``spark.sql.parquet.outputTimestampType=TIMESTAMP_MICROS``: written datasets hold UTC
  microsecond timestamps (not the legacy INT96) that pyarrow and DuckDB read as UTC.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING

from foundation.errors import FeatureStoreError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

FORCED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.legacy.parquet.nanosAsLong": "true",
    "spark.sql.parquet.inferTimestampNTZ.enabled": "false",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}
DEFAULT_CONF = {
    "spark.master": "local[*]",
    "spark.app.name": "featurestore",
    "spark.ui.enabled": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}


class SparkUnavailableError(FeatureStoreError):
    """pyspark is not installed or no Java runtime can be found."""


def require_pyspark() -> None:
    """Check that pyspark can be imported.

    Raises:
        SparkUnavailableError: pyspark is missing, with the command that installs it.
    """
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise SparkUnavailableError(
            "the Spark offline store and engine need pyspark 4: install the extra with "
            "`pip install 'featurestore[spark]'` (make install does it)",
        ) from exc


def java_available() -> bool:
    """Whether a ``java`` executable is on ``JAVA_HOME`` or ``PATH``."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return True
    return shutil.which("java") is not None


def spark_session(conf: Mapping[str, str] | None = None) -> SparkSession:
    """The active Spark session, or a new one built from ``conf``.

    Args:
        conf: ``spark_conf`` from ``feature_store.yaml`` (``spark.master`` and the rest);
            ignored, apart from the forced settings, when a session is already active.

    Returns:
        A session with the settings of :data:`FORCED_CONF` applied.

    Raises:
        SparkUnavailableError: pyspark or Java is missing.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is None:
        if not java_available():
            raise SparkUnavailableError(
                "Spark needs a Java 17+ runtime and none was found on JAVA_HOME or PATH: "
                "install one (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`) or "
                "set JAVA_HOME",
            )
        # Python workers (mapInArrow, foreachPartition) run this interpreter, with this
        # environment's packages, unless PYSPARK_PYTHON says otherwise (a cluster whose
        # executors have their own Python sets it).
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = SparkSession.builder
        for key, value in {**DEFAULT_CONF, **dict(conf or {}), **FORCED_CONF}.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
    for key, value in FORCED_CONF.items():
        if session.conf.get(key) != value:
            session.conf.set(key, value)
    return session
