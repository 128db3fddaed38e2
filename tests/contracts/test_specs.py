"""The copied API descriptions are the shared originals, load with openapi-core, and are patched only as
documented in ``tests/contracts/specs.py``."""

from __future__ import annotations

import pytest

from tests.contracts import specs


def test_the_copies_match_their_checksums() -> None:
    sums = specs.checksums()
    assert set(sums) == {specs.GITHUB_REST, specs.GITHUB_WEBHOOKS, specs.JIRA}
    for name, (expected, actual) in sums.items():
        assert expected == actual, f"{name} was edited: patch at load time instead"


@pytest.mark.parametrize("name", [specs.GITHUB_REST, specs.GITHUB_WEBHOOKS, specs.JIRA])
def test_each_description_loads_and_validates(name: str) -> None:
    assert specs.openapi(name) is specs.openapi(name)  # loaded once per process


def test_the_patches_are_the_documented_ones() -> None:
    specs.openapi(specs.JIRA)
    specs.openapi(specs.GITHUB_REST)
    jira = specs.PATCHES[specs.JIRA]
    defaults = [p for p, what in jira if what.startswith("removed default")]
    assert sorted(defaults) == sorted(
        [
            "/paths/~1rest~1api~13~1classification-levels/get/parameters/0/schema/items",
            "/paths/~1rest~1api~13~1field~1search/get/parameters/2/schema/items",
            "/paths/~1rest~1api~13~1screens/get/parameters/4/schema/items",
            "/paths/~1rest~1api~13~1workflow~1rule~1config/get/parameters/2/schema/items",
        ]
    )
    assert all(what.startswith(("removed default", "date-time format")) for _p, what in jira)
    assert all(
        what == "added null to the enum of a nullable schema" for _p, what in specs.PATCHES[specs.GITHUB_REST]
    )
    assert specs.PATCHES.get(specs.GITHUB_WEBHOOKS, []) == []
