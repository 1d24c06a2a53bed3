"""status_only_change: which updates a controller with ignore_status_updates skips."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sedna.resources.objects import ResourceObject
from sedna_gm.controllers.controller import status_only_change


def base() -> ResourceObject:
    return ResourceObject(
        kind="Dataset", name="d", generation=1, spec={"url": "/a"}, labels={"a": "1"}
    )


def test_status_and_version_only_is_skipped() -> None:
    old, new = base(), base()
    new.status = {"numberOfSamples": 5}
    new.resource_version = "9"
    assert status_only_change(old, new)


@pytest.mark.parametrize(
    "change",
    [
        lambda o: setattr(o, "generation", 2),
        lambda o: o.spec.update(url="/b"),
        lambda o: o.labels.update(b="2"),
        lambda o: o.annotations.update(note="x"),
        lambda o: o.finalizers.append("sedna.io/cleanup"),
    ],
)
def test_anything_else_is_reconciled(change: Callable[[ResourceObject], None]) -> None:
    old, new = base(), base()
    change(new)
    assert not status_only_change(old, new)
