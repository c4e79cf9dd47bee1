"""Version suffixes of view references read as Feast 0.67's ``_parse_feature_or_view_ref``."""

from __future__ import annotations

import pytest
from feast.utils import _parse_feature_or_view_ref

from foundation.refs import split_version


@pytest.mark.parametrize(
    "view",
    ["stats", "stats@latest", "stats@LATEST", "stats@", "stats@v2", "stats@V12", "stats@x",
     "stats@v", "stats@v2x", "@latest", "a@b@latest", "stats@v0"],
)  # fmt: skip
def test_split_version_reads_refs_as_feast_does(view: str) -> None:
    name, version, _ = _parse_feature_or_view_ref(f"{view}:f")
    assert split_version(view) == (name, version)
