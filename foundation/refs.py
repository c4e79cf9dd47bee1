"""Feast's feature view references with a version suffix: ``view@latest``, ``view@v2``.

Feast 0.67 reads ``<view>[@<version>]:<feature>``: no suffix, ``@latest`` (any case) or a
bare ``@`` name the view's current definition; ``@v<N>`` pins version N (read only where
online feature view versioning keeps old versions); any other suffix is part of the name.
"""

from __future__ import annotations

import re

_PIN = re.compile(r"[vV]([0-9]+)")


def split_version(view: str) -> tuple[str, int | None]:
    """``(name, pinned version)`` of a view reference; the version is None when unpinned.

    Examples: ``"stats"`` and ``"stats@latest"`` -> ``("stats", None)``; ``"stats@v2"`` ->
    ``("stats", 2)``; ``"stats@x"`` -> ``("stats@x", None)``.
    """
    name, at, version = view.partition("@")
    if not at:
        return view, None
    if not version or version.lower() == "latest":
        return name, None
    pin = _PIN.fullmatch(version)
    return (name, int(pin.group(1))) if pin else (view, None)
