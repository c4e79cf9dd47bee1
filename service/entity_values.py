"""Entity values of a lookup request in the forms ``feast serve`` also accepts.

``feast serve`` converts each entity column with Feast's ``python_values_to_proto_values``,
which runs ``int()`` on the values of an integer join key and looks entity names up as
their join keys. Of what that accepts, we take the lossless part (each checked against
stock ``feast serve`` in ``tests/service/test_http_contract.py``):

- an integer join key given as a decimal string, ``"1001"`` (protobuf JSON's form of
  int64, what JavaScript and Java clients send);
- an integer join key given as an integral float, ``1001.0``, within JavaScript's safe
  integers (|x| <= 2**53, beyond which the JSON text was already rounded);
- an entity name in place of its join key, ``{"driver": [1001]}`` for the entity
  ``driver`` keyed by ``driver_id`` (the response names the column ``driver_id``).

Everything else ``int()`` would swallow stays refused with a 422 that names the value:
``1001.5`` (Feast truncates it to 1001, another driver), ``true``, ``" 1001"``, ``"01001"``
and ``"1_001"``, as does an entity given both by name and by join key. Both entrances of
``POST /get-online-features`` (the FastAPI route and the ASGI shortcut) call
:func:`coerce_entities` through ``service.routes.online.answer``. The write paths
(``/push``, ``/write-to-online-store``) read integer join keys with the same
:func:`integer_value` (:mod:`service.write_values`), so a key that can be read can be
written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from feast.entity import Entity
from feast.value_type import ValueType

from foundation.errors import InvalidEntityError, show

_INTEGER_TYPES = frozenset({ValueType.INT32, ValueType.INT64})
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)").fullmatch
_SAFE_FLOAT = float(2**53)


@dataclass(frozen=True, slots=True)
class EntityForms:
    """What :func:`coerce_entities` needs to know about one compiled feature set."""

    integer_keys: frozenset[str] = frozenset()  # join keys of type INT32 / INT64
    aliases: Mapping[str, str] = field(default_factory=dict)  # entity name -> join key


def entity_forms(
    entities: Iterable[Entity],
    key_types: Mapping[str, ValueType],
    *,
    reserved: frozenset[str],
) -> EntityForms:
    """The coercions a feature set allows.

    Args:
        entities: the project's entities.
        key_types: the type of each join key the feature set reads.
        reserved: names that keep their own meaning (join keys, request fields).

    Returns:
        The integer join keys and the entity names usable in place of join keys.
    """
    join_keys = {e.join_key for e in entities}
    aliases = {
        e.name: e.join_key
        for e in entities
        if e.name != e.join_key and e.name not in join_keys and e.name not in reserved
    }
    return EntityForms(
        integer_keys=frozenset(k for k, vt in key_types.items() if vt in _INTEGER_TYPES),
        aliases=aliases,
    )


def integer_value(value: Any) -> Any:
    """An integer join key's value as an int when it is a lossless form of one.

    Args:
        value: a JSON value sent for an INT32/INT64 join key.

    Returns:
        The int for a decimal string (``"1001"``) or an integral float within +/-2**53
        (``1001.0``); any other value unchanged (an int passes; bool, null, lists are
        left to the caller's type check).

    Raises:
        ValueError: a string or float that is not exactly an integer; the message says
            what to send instead.
    """
    kind = type(value)
    if kind is str:
        if _DECIMAL(value) is None:
            raise ValueError(
                'send a JSON number or a decimal string such as "1001" (no sign other than '
                '"-", no leading zeros, spaces or separators)'
            )
        return int(value)
    if kind is float:
        if not value.is_integer() or abs(value) > _SAFE_FLOAT:
            raise ValueError(
                "only whole numbers within +/-2**53 are read as integers (Feast would "
                "truncate this to another entity); send the exact integer"
            )
        return int(value)
    return value


def _to_int(key: str, value: Any) -> Any:
    try:
        return integer_value(value)  # bool, null, lists: refused by the reader
    except ValueError as exc:
        raise InvalidEntityError(
            f"join key '{key}' expects an integer, got {show(value)}; {exc}", join_key=key
        ) from None


def coerce_entities(forms: EntityForms, entities: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The request's entity columns with names and values in their canonical form.

    Args:
        forms: from :func:`entity_forms` for the requested feature set.
        entities: the request's ``entities`` (not modified).

    Returns:
        ``entities`` itself when nothing needs coercing (the common case), else a new
        dict: entity names renamed to their join keys, integer keys given as decimal
        strings or integral floats converted to ints.

    Raises:
        InvalidEntityError: a string or float that is not a lossless integer for an
            integer join key, or an entity given both by name and by join key.
    """
    out = entities
    if forms.aliases and not forms.aliases.keys().isdisjoint(entities):
        out = {}
        for name, values in entities.items():
            key = forms.aliases.get(name, name)
            if key in out or (key != name and key in entities):
                raise InvalidEntityError(
                    f"entity '{name}' is given both by its name and by its join key "
                    f"'{key}'; send it once, as '{key}'",
                    join_key=key,
                )
            out[key] = values
    for key in forms.integer_keys:
        column = out.get(key)
        if column is None or all(type(v) is int for v in column):
            continue
        if out is entities:
            out = dict(entities)
        out[key] = [_to_int(key, v) for v in column]
    return out
