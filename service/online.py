"""Online lookups: compile a feature set once, then answer each request in one Redis trip.

A request names a feature set (a list of refs or a feature service, plus
``full_feature_names``). The first request for a set compiles an
:class:`OnlinePlan`: which views and features to read (including the inputs of
on-demand views), the read plans of ``online_store.reader`` (keys, field hashes,
decoders; one per join key map, see :mod:`service.key_maps`), the response columns and
their JSON encoders. The plan is cached on the registry snapshot, so later requests
only validate entities, run one pipelined read and serialise with orjson.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as aioredis
from feast import OnDemandFeatureView
from feast.feature_view import DUMMY_ENTITY_ID
from feast.value_type import ValueType
from redis.exceptions import RedisError

from foundation.errors import (
    BackendUnavailableError,
    FeatureNotFoundError,
    FeatureViewNotFoundError,
    InvalidRequestError,
)
from foundation.refs import split_version
from service.catalog import RegistrySnapshot
from service.encoding import ENCODERS, EPOCH, Encoder, format_timestamp, json_default
from service.entity_values import EntityForms, entity_forms
from service.key_maps import KeyMap, MappedRead, compile_reads, key_map, read_all, read_key
from service.odfv import OdfvStep
from service.redis_fast import FastRedis
from service.udf_runner import UdfRunner

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutputColumn:
    """One response column: where its values come from and how they become JSON."""

    name: str
    # the read result's key (service.key_maps.read_key), or the ODFV's transformed column
    key: str
    from_odfv: bool
    encoder: Encoder | None
    view: str = ""  # the view and its key map: columns read together share event times


@dataclass(frozen=True, slots=True)
class OnlinePlan:
    """A compiled feature set: everything a request needs except the entity values."""

    join_keys: frozenset[str]  # the entity columns a request must give
    request_fields: frozenset[str]
    reads: tuple[MappedRead, ...]  # one per join key map, the identity first
    outputs: tuple[OutputColumn, ...]
    odfvs: tuple[OdfvStep, ...]
    # For include_feature_view_version_metadata: Feast's {"name", "version"} per read view
    # (a version of 0 is left out, as Feast's JSON does).
    view_metadata: tuple[dict[str, Any], ...] = ()
    output_names: tuple[str, ...] = ()  # the names of ``outputs``, in order
    # Entity-less views are keyed by Feast's `__dummy_id` = "", which requests never carry.
    entityless: bool = False
    # Entity columns echoed in the response: any of the project's join keys the request
    # gives, needed or not (as Feast does).
    echo_keys: frozenset[str] = frozenset()
    # The lossless forms of entity values accepted besides the canonical one.
    entity_forms: EntityForms = field(default_factory=EntityForms)
    # A join key map's column -> which projection reads which join key from it (errors).
    key_sources: Mapping[str, str] = field(default_factory=dict)


def _split_ref(ref: str) -> tuple[str, str]:
    view, sep, feature = ref.partition(":")
    if not sep or not view or not feature or ":" in feature:
        raise InvalidRequestError(
            f'feature reference {ref!r} is malformed; write it as "<feature_view>:<feature>", '
            'e.g. "driver_hourly_stats:conv_rate"',
            feature=ref,
        )
    name, pin = split_version(view)
    if pin is not None:
        raise InvalidRequestError(
            f"feature reference {ref!r} pins version {pin}; online feature view versioning "
            f'is not enabled here, so only the latest is served: "{name}:{feature}"',
            feature=ref,
        )
    return name, feature


def _refs_of_service(snapshot: RegistrySnapshot, name: str) -> list[tuple[str, str, str, KeyMap]]:
    """(view, shown name, feature, join key map) per feature of the service."""
    service = snapshot.feature_service(name)
    refs = []
    for projection in service.feature_view_projections:
        shown = projection.name_alias or projection.name
        info = snapshot.readable.get(projection.name)
        keys = key_map(projection.join_key_map, info.join_keys) if info is not None else ()
        for feature in projection.features:
            refs.append((projection.name, shown, feature.name, keys))
    return refs


def _note_sources(sources: dict[str, str], what: str, view: str, keys: KeyMap) -> None:
    """Say where each mapped column is read, for a request that lacks it (first use wins)."""
    for key, column in keys:
        sources.setdefault(
            column, f"{what} reads feature view {view!r} by its join key {key!r} from {column!r}"
        )


def compile_plan(
    snapshot: RegistrySnapshot,
    *,
    features: Sequence[str],
    feature_service: str | None,
    full_feature_names: bool,
) -> OnlinePlan:
    """Resolve a feature set against the registry snapshot.

    Args:
        snapshot: the registry snapshot.
        features: ``view:feature`` refs (ignored when ``feature_service`` is given).
        feature_service: a feature service name.
        full_feature_names: name columns ``view__feature``.

    Returns:
        The compiled plan.

    Raises:
        InvalidRequestError: malformed refs or colliding names.
        FeatureViewNotFoundError, FeatureNotFoundError, FeatureServiceNotFoundError:
            a name the registry does not know.
    """
    if feature_service is not None:
        refs = _refs_of_service(snapshot, feature_service)
    else:
        refs = [(v, v, f, ()) for v, f in map(_split_ref, features)]

    # (join key map, view) -> features to read, in order
    read_features: dict[tuple[KeyMap, str], list[str]] = {}
    # (map, view, feature) read under the view's own name, not only a feature service's
    # alias: what a UDF declaring the view is handed (Feast counts an alias as another view).
    own_name: set[tuple[KeyMap, str, str]] = set()
    key_sources: dict[str, str] = {}
    shown_views: dict[str, str] = {}  # the name a read view is reported under -> the view

    def need(view: str, feature: str, keys: KeyMap, *, alias: bool = False) -> None:
        wanted = read_features.setdefault((keys, view), [])
        if feature not in wanted:
            wanted.append(feature)
        if not alias:
            own_name.add((keys, view, feature))

    outputs: list[OutputColumn] = []
    odfv_outputs: dict[str, list[tuple[str, str]]] = {}
    for view_name, shown, feature, keys in refs:
        column = f"{shown}__{feature}" if full_feature_names else feature
        if view_name in snapshot.readable:  # stored: batch, stream, written on-demand views
            info = snapshot.readable[view_name]
            if feature not in info.features:
                raise FeatureNotFoundError(
                    f"feature {feature!r} not in feature view {view_name!r}; it has "
                    f"{list(info.features)}",
                    feature=f"{view_name}:{feature}",
                )
            need(view_name, feature, keys, alias=shown != view_name)
            _note_sources(key_sources, f"projection {shown!r}", view_name, keys)
            shown_views.setdefault(shown, view_name)
            encoder = ENCODERS.get(info.features[feature].value_type)
            key = read_key(view_name, feature, keys)
            outputs.append(OutputColumn(column, key, False, encoder, read_key(view_name, "", keys)))
        elif view_name in snapshot.on_demand_views:
            odfv = snapshot.on_demand_views[view_name]
            by_name = {f.name: f for f in odfv.features}
            if feature not in by_name:
                raise FeatureNotFoundError(
                    f"feature {feature!r} not in on-demand feature view {view_name!r}; it has "
                    f"{list(by_name)}",
                    feature=f"{view_name}:{feature}",
                )
            transformed = (
                f"{odfv.projection.name_to_use()}__{feature}" if full_feature_names else feature
            )
            odfv_outputs.setdefault(view_name, []).append((transformed, column))
            # On-demand outputs come back JSON-ready (service.odfv: Feast's conversion).
            outputs.append(OutputColumn(column, column, True, None))
        else:
            raise FeatureViewNotFoundError(
                f"feature view {view_name!r} (from {view_name}:{feature}) not in project "
                f"{snapshot.project!r}; known views: "
                f"{sorted([*snapshot.views, *snapshot.on_demand_views])}",
                feature_view=view_name,
            )

    seen: dict[str, int] = {}
    for out in outputs:
        seen[out.name] = seen.get(out.name, 0) + 1
    collisions = sorted(name for name, n in seen.items() if n > 1)
    if collisions:
        raise InvalidRequestError(
            f"feature names collide in the response: {collisions}; set "
            '"full_feature_names": true or request each feature once',
            collisions=collisions,
        )

    # Built once every request field is known: each UDF is handed them all (below).
    pending: list[tuple[OnDemandFeatureView, tuple[tuple[str, str], ...]]] = []
    request_fields: set[str] = set()
    for odfv_name, outs in odfv_outputs.items():
        odfv = snapshot.on_demand_views[odfv_name]
        for projection in odfv.source_feature_view_projections.values():
            info = snapshot.view(projection.name)  # a name the registry does not know: 404
            keys = key_map(projection.join_key_map, info.join_keys)
            _note_sources(key_sources, f"on-demand view {odfv_name!r}", info.name, keys)
            shown_views.setdefault(projection.name, projection.name)
            for f in projection.features:
                need(projection.name, f.name, keys)
        pending.append((odfv, tuple(outs)))
        request_fields.update(odfv.get_request_data_schema())

    compiled = compile_reads(snapshot.project, snapshot.readable, read_features)
    join_keys = compiled.columns
    # Like Feast, every join key of the project given in the request is echoed (in the
    # request's order), needed or not, and so is every mapped column; the needed ones
    # must be there.
    echo_keys = (join_keys | {e.join_key for e in snapshot.entities.values()}) - {DUMMY_ENTITY_ID}
    # A UDF is handed what Feast hands it from the request: every project join key given
    # and the request data of every on-demand view asked for.
    given_keys, given_fields = frozenset(echo_keys), frozenset(request_fields)
    steps = [
        OdfvStep.build(
            odfv,
            _udf_inputs(snapshot, odfv, read_features, own_name),
            outs,
            given_keys=given_keys,
            given_fields=given_fields,
        )
        for odfv, outs in pending
    ]
    return OnlinePlan(
        entityless=compiled.entityless,
        echo_keys=frozenset(echo_keys),
        entity_forms=entity_forms(
            snapshot.entities.values(),
            compiled.key_types,
            reserved=frozenset(join_keys | echo_keys | request_fields),
        ),
        join_keys=join_keys,
        request_fields=frozenset(request_fields),
        reads=compiled.reads,
        outputs=tuple(outputs),
        odfvs=tuple(steps),
        output_names=tuple(out.name for out in outputs),
        view_metadata=tuple(
            {"name": shown, **({"version": v} if (v := snapshot.readable[view].version) else {})}
            for shown, view in shown_views.items()
        ),
        key_sources=key_sources,
    )


def _udf_inputs(
    snapshot: RegistrySnapshot,
    odfv: OnDemandFeatureView,
    read_features: Mapping[tuple[KeyMap, str], Sequence[str]],
    own_name: AbstractSet[tuple[KeyMap, str, str]],
) -> tuple[tuple[str, str, ValueType], ...]:
    """The features a UDF is handed: as in Feast, every feature read from a source view it
    declares (through the source's join key map), its projection's or not (another ref or
    view may need the rest), in read order, unless read only under a feature service's
    alias for the view.

    Returns:
        (``view__feature`` column, read key, value type) per feature.
    """
    inputs = []
    for projection in odfv.source_feature_view_projections.values():
        info = snapshot.readable[projection.name]
        keys = key_map(projection.join_key_map, info.join_keys)
        for feature in read_features[(keys, projection.name)]:
            if (keys, projection.name, feature) not in own_name:
                continue
            inputs.append(
                (f"{projection.name}__{feature}", read_key(projection.name, feature, keys),
                 info.features[feature].value_type)
            )  # fmt: skip
    return tuple(inputs)


async def read_online(
    plan: OnlinePlan,
    client: aioredis.Redis | aioredis.RedisCluster | FastRedis,
    entities: Mapping[str, Sequence[Any]],
    *,
    rows: int,
    full_feature_names: bool,
    udfs: UdfRunner,
    include_view_metadata: bool = False,
    observe_redis: Callable[[float], None] | None = None,
) -> bytes:
    """Answer one request with a compiled plan: one Redis round trip, then JSON bytes.

    Args:
        plan: the compiled feature set.
        client: asyncio Redis client.
        entities: the request's entities (checked by the route's ``check_entities``).
        rows: the number of entity rows, as ``check_entities`` returned it.
        full_feature_names: as requested (on-demand output naming).
        udfs: where the plan's on-demand transformations run.
        include_view_metadata: add ``metadata.feature_view_metadata`` (Feast's
            ``include_feature_view_version_metadata``).
        observe_redis: called with the Redis call duration in seconds.

    Returns:
        The response body, Feast's JSON.

    Raises:
        InvalidEntityError: a join key value of the wrong type.
        BackendUnavailableError: Redis failed or timed out.
    """
    started = time.perf_counter()
    try:
        result = await read_all(plan.reads, client, entities, rows)
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("Redis read failed: %s: %s", type(exc).__name__, exc)
        raise BackendUnavailableError(
            f"Redis read failed ({type(exc).__name__}); retry shortly", backend="redis"
        ) from exc
    finally:
        if observe_redis is not None:
            observe_redis(time.perf_counter() - started)

    names: list[str] = []
    results: list[dict[str, Any]] = []
    if plan.echo_keys:
        epochs = [EPOCH] * rows
        present = ["PRESENT"] * rows
        for key, values in entities.items():
            if key in plan.echo_keys:
                names.append(key)
                results.append({"values": values, "statuses": present, "event_timestamps": epochs})
    # Features of one view share their event times; format each distinct list once.
    formatted: dict[str, tuple[list[Any], list[str]]] = {}
    odfv_values: dict[str, list[Any]] = {}
    for step in plan.odfvs:
        transformed = await udfs.transform(
            step, entities, result, rows=rows, full_feature_names=full_feature_names
        )
        odfv_values.update(transformed)
    columns = result.columns
    append = results.append
    for out in plan.outputs:
        encoder = out.encoder
        if out.from_odfv:
            values = odfv_values[out.key]
            append(
                {
                    "values": encoder(values) if encoder is not None else values,
                    "statuses": ["PRESENT"] * len(values),
                    "event_timestamps": [EPOCH] * len(values),
                }
            )
            continue
        col = columns[out.key]
        times = col.event_timestamps
        cached = formatted.get(out.view)
        # the reader shares one times list between the columns of a view
        if cached is not None and (cached[0] is times or cached[0] == times):
            stamps = cached[1]
        else:
            stamps = [EPOCH if ts is None else format_timestamp(ts) for ts in times]
            formatted[out.view] = (times, stamps)
        append(
            {
                "values": encoder(col.values) if encoder is not None else col.values,
                "statuses": col.statuses,
                "event_timestamps": stamps,
            }
        )
    names.extend(plan.output_names)
    metadata: dict[str, Any] = {"feature_names": names}
    if include_view_metadata:
        metadata["feature_view_metadata"] = plan.view_metadata
    return orjson.dumps({"metadata": metadata, "results": results}, default=json_default)
