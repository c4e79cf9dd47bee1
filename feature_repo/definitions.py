"""Ride-hailing example: drivers, riders (customers) and the trips between them.

Three batch feature views with different TTLs and key shapes, a push source for
fresh driver stats, an on-demand view that prices a trip from request data, and a
feature service that bundles what the ride-ranking model reads.
"""

from datetime import timedelta

import pandas as pd
from feast import (
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    PushSource,
    RequestSource,
    ValueType,
)
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Array, Bool, Float32, Float64, Int32, Int64, String, UnixTimestamp

driver = Entity(
    name="driver",
    join_keys=["driver_id"],
    value_type=ValueType.INT64,
    description="A driver on the platform.",
)
customer = Entity(
    name="customer",
    join_keys=["customer_id"],
    value_type=ValueType.STRING,
    description="A rider, keyed by an opaque string id such as 'c_000042'.",
)

driver_stats_source = FileSource(
    name="driver_stats_source",
    path="data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)
driver_stats_push = PushSource(name="driver_stats_push", batch_source=driver_stats_source)

driver_hourly_stats = FeatureView(
    name="driver_hourly_stats",
    entities=[driver],
    ttl=timedelta(days=1),
    schema=[
        Field(name="conv_rate", dtype=Float32),
        Field(name="acc_rate", dtype=Float32),
        Field(name="avg_daily_trips", dtype=Int64),
        Field(name="avg_rating", dtype=Float64),
        Field(name="surge_multiplier", dtype=Float64),
        Field(name="is_active", dtype=Bool),
    ],
    online=True,
    source=driver_stats_push,
    tags={"team": "marketplace"},
)

customer_profile_source = FileSource(
    name="customer_profile_source",
    path="data/customer_profile.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

customer_profile = FeatureView(
    name="customer_profile",
    entities=[customer],
    ttl=timedelta(0),  # profiles never expire
    schema=[
        Field(name="current_balance", dtype=Float64),
        Field(name="lifetime_trip_count", dtype=Int64),
        Field(name="avg_passenger_rating", dtype=Float32),
        Field(name="membership_tier", dtype=String),
        Field(name="signup_ts", dtype=UnixTimestamp),
        Field(name="favourite_zones", dtype=Array(String)),
    ],
    online=True,
    source=customer_profile_source,
    tags={"team": "riders"},
)

driver_customer_source = FileSource(
    name="driver_customer_source",
    path="data/driver_customer_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_column="created",
)

driver_customer_stats = FeatureView(
    name="driver_customer_stats",
    entities=[driver, customer],
    ttl=timedelta(days=30),
    schema=[
        Field(name="trips_together", dtype=Int32),
        Field(name="avg_tip", dtype=Float64),
        Field(name="last_rating", dtype=Int32),
    ],
    online=True,
    source=driver_customer_source,
    tags={"team": "matching"},
)

trip_request = RequestSource(
    name="trip_request",
    schema=[
        Field(name="distance_km", dtype=Float64),
        Field(name="duration_min", dtype=Float64),
    ],
)


@on_demand_feature_view(
    sources=[driver_hourly_stats, trip_request],
    schema=[Field(name="estimated_fare", dtype=Float64)],
    mode="pandas",
)
def fare_estimate(inputs: pd.DataFrame) -> pd.DataFrame:
    """Base fare plus distance and time, scaled by the driver's current surge."""
    out = pd.DataFrame()
    surge = inputs["surge_multiplier"].fillna(1.0)
    out["estimated_fare"] = (
        2.5 + 1.2 * inputs["distance_km"] + 0.3 * inputs["duration_min"]
    ) * surge
    return out


ride_ranking_v1 = FeatureService(
    name="ride_ranking_v1",
    features=[
        driver_hourly_stats[["conv_rate", "acc_rate", "avg_rating"]],
        customer_profile[["avg_passenger_rating", "membership_tier"]],
        driver_customer_stats,
        fare_estimate,
    ],
    tags={"model": "ride_ranking", "version": "1"},
)
