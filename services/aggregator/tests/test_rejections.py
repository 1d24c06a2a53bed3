"""Every kind of rejected update: a typed error with its gRPC code, and the round intact."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sedna_aggregator.core import (
    DuplicateUpdateError,
    InvalidRequestError,
    MalformedUpdateError,
    NotSelectedError,
    RoundNotOpenError,
    Session,
    SessionClosedError,
    SessionState,
    UnknownClientError,
    UpdateRejectedError,
    WrongRoundError,
)

Array = npt.NDArray[Any]
Weights = Callable[..., list[Array]]
Reference = Callable[[list[tuple[list[Array], int]]], list[Array]]
Factory = Callable[..., Session]
Attempt = Callable[[Session, Weights], Awaitable[Any]]


def _bad(kind: str, make_weights: Weights) -> list[Any]:
    good = make_weights(99)
    if kind == "shape":
        return [good[0].T, good[1]]
    if kind == "layers":
        return good[:1]
    if kind == "dtype":
        return [good[0].astype(np.int32), good[1]]
    if kind == "nan":
        bad = good[0].copy()
        bad[0, 0] = np.nan
        return [bad, good[1]]
    if kind == "inf":
        bad = good[1].copy()
        bad[1] = np.inf
        return [good[0], bad]
    if kind == "not_a_list":
        return good[0]  # type: ignore[return-value]
    raise AssertionError(kind)


def _malformed(kind: str) -> Attempt:
    def attempt(session: Session, make_weights: Weights) -> Awaitable[Any]:
        return session.submit_update("c", 1, _bad(kind, make_weights), 1)

    return attempt


ATTEMPTS: list[tuple[str, type[UpdateRejectedError], str, Attempt]] = [
    (
        "unknown client",
        UnknownClientError,
        "FAILED_PRECONDITION",
        lambda s, w: s.submit_update("stranger", 1, w(5), 1),
    ),
    (
        "stale round",
        WrongRoundError,
        "FAILED_PRECONDITION",
        lambda s, w: s.submit_update("c", 0, w(5), 1),
    ),
    (
        "future round",
        WrongRoundError,
        "FAILED_PRECONDITION",
        lambda s, w: s.submit_update("c", 2, w(5), 1),
    ),
    (
        "not selected",
        NotSelectedError,
        "FAILED_PRECONDITION",
        lambda s, w: s.submit_update("late", 1, w(5), 1),
    ),
    (
        "duplicate",
        DuplicateUpdateError,
        "ALREADY_EXISTS",
        lambda s, w: s.submit_update("a", 1, w(5), 1),
    ),
    *[
        (
            f"malformed {kind}",
            MalformedUpdateError,
            "INVALID_ARGUMENT",
            _malformed(kind),
        )
        for kind in ("shape", "layers", "dtype", "nan", "inf", "not_a_list")
    ],
    (
        "zero samples",
        MalformedUpdateError,
        "INVALID_ARGUMENT",
        lambda s, w: s.submit_update("c", 1, w(5), 0),
    ),
    (
        "NaN metric",
        MalformedUpdateError,
        "INVALID_ARGUMENT",
        lambda s, w: s.submit_update("c", 1, w(5), 1, {"loss": float("nan")}),
    ),
]


@pytest.mark.parametrize("case", ATTEMPTS, ids=[a[0] for a in ATTEMPTS])
async def test_rejected_update_leaves_the_round_intact(
    make_session: Factory,
    make_weights: Weights,
    reference_fedavg: Reference,
    metrics: Any,
    case: tuple[str, type[UpdateRejectedError], str, Attempt],
) -> None:
    _name, error, code, attempt = case
    session = make_session(exit_round=1, min_participants=3, expected_clients=3)
    for cid in ("a", "b", "c"):
        await session.join(cid, 1)
    await session.join("late", 1)  # joined after the selection: not selected for round 1
    wa, wb, wc = make_weights(1), make_weights(2), make_weights(3)
    await session.submit_update("a", 1, wa, 2)
    await session.submit_update("b", 1, wb, 3)

    with pytest.raises(error) as info:
        await attempt(session, make_weights)
    assert info.value.code == code
    assert str(info.value)
    assert session.state is SessionState.ROUND_OPEN
    assert session.reported == ("a", "b")
    assert metrics.updates[-1][1:] == (False, error.reason)

    # The round goes on as if nothing happened; c can still send its (good) update.
    await session.submit_update("c", 1, wc, 5)
    await session.drain()
    result = await session.wait_for_round(1)
    assert result.participants == ("a", "b", "c")
    assert result.total_samples == 10
    assert result.weights is not None
    expected = reference_fedavg([(wa, 2), (wb, 3), (wc, 5)])
    for got, want in zip(result.weights, expected, strict=True):
        np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6)


async def test_update_before_the_round_opens_is_refused(
    make_session: Factory, make_weights: Weights
) -> None:
    session = make_session(min_participants=2)
    await session.join("a", 1)
    with pytest.raises(RoundNotOpenError, match="not open yet"):
        await session.submit_update("a", 1, make_weights(1), 1)


async def test_update_after_completion_is_refused(
    make_session: Factory, make_weights: Weights
) -> None:
    session = make_session(exit_round=1)
    await session.join("a", 1)
    await session.submit_update("a", 1, make_weights(1), 1)
    await session.drain()
    assert session.state is SessionState.COMPLETED
    with pytest.raises(SessionClosedError):
        await session.submit_update("a", 2, make_weights(2), 1)
    assert (await session.join("a", 1)).state is SessionState.COMPLETED


@pytest.mark.parametrize(("client_id", "samples"), [("", 1), ("a", -1), ("a", True)])
async def test_bad_join_is_an_invalid_request(
    make_session: Factory, client_id: str, samples: Any
) -> None:
    session = make_session()
    with pytest.raises(InvalidRequestError):
        await session.join(client_id, samples)
    assert session.status().clients == ()
