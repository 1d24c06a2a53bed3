"""Client selection: upstream classes and the seeded fraction chooser."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sedna.algorithms.client_choose import (
    AbstractClientChoose,
    FractionClientChoose,
    SimpleClientChoose,
)

CLIENTS = [f"node-{k:02d}" for k in range(20)]


def test_upstream_parameters() -> None:
    assert SimpleClientChoose().parameters == {"per_round": 1}
    assert SimpleClientChoose(per_round="3").parameters == {"per_round": 3}
    assert AbstractClientChoose().parameters == {}


def test_abstract_choose_not_implemented() -> None:
    with pytest.raises(NotImplementedError):
        AbstractClientChoose().choose(["a"], 0)


def test_simple_count_and_seed() -> None:
    chooser = SimpleClientChoose(per_round=3, seed=7)
    first = chooser.choose(CLIENTS, 1)
    assert len(first) == 3
    assert first == sorted(first)
    assert set(first) <= set(CLIENTS)
    assert SimpleClientChoose(per_round=3, seed=7).choose(list(reversed(CLIENTS)), 1) == first
    assert SimpleClientChoose(per_round=30).choose(CLIENTS, 0) == CLIENTS


def test_simple_unseeded_still_valid() -> None:
    chosen = SimpleClientChoose(per_round=2).choose(CLIENTS, 0)
    assert len(chosen) == 2
    assert len(set(chosen)) == 2


@pytest.mark.parametrize(
    ("fraction", "min_clients", "available", "expected"),
    [
        (1.0, 1, 20, 20),
        (0.5, 1, 20, 10),
        (0.33, 1, 20, 6),  # floor(6.6)
        (0.1, 4, 20, 4),
        (0.1, 1, 5, 1),  # floor(0.5) = 0 -> min_clients
        (0.5, 10, 5, 5),  # fewer available than min_clients: all of them
        (0.2, 0, 3, 0),
    ],
)
def test_fraction_count(fraction: float, min_clients: int, available: int, expected: int) -> None:
    chooser = FractionClientChoose(fraction=fraction, min_clients=min_clients, seed=1)
    chosen = chooser.choose(CLIENTS[:available], 3)
    assert len(chosen) == expected


def test_fraction_deterministic_per_seed_and_round() -> None:
    chooser = FractionClientChoose(fraction=0.25, seed=42)
    rounds = [chooser.choose(CLIENTS, r) for r in range(6)]
    again = FractionClientChoose(fraction="0.25", seed="42")
    assert [again.choose(list(reversed(CLIENTS)), r) for r in range(6)] == rounds
    assert len({tuple(r) for r in rounds}) > 1  # rounds differ
    other = FractionClientChoose(fraction=0.25, seed=43)
    assert [other.choose(CLIENTS, r) for r in range(6)] != rounds


@settings(max_examples=50, deadline=None)
@given(
    count=st.integers(0, 40),
    fraction=st.floats(0.01, 1.0),
    min_clients=st.integers(0, 10),
    seed=st.integers(0, 2**32),
    round_number=st.integers(0, 1000),
)
def test_fraction_properties(
    count: int, fraction: float, min_clients: int, seed: int, round_number: int
) -> None:
    pool = [f"c{k}" for k in range(count)]
    chooser = FractionClientChoose(fraction=fraction, min_clients=min_clients, seed=seed)
    chosen = chooser.choose(pool, round_number)
    assert chosen == sorted(set(chosen))
    assert set(chosen) <= set(pool)
    assert len(chosen) == min(count, max(min_clients, math.floor(fraction * count)))
    assert chooser.choose(pool, round_number) == chosen


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fraction": 0}, "fraction must be >"),
        ({"fraction": 1.5}, "fraction must be <="),
        ({"min_clients": -1}, "min_clients must be >= 0"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"seed": "abc"}, "seed must be an integer"),
    ],
)
def test_fraction_invalid(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FractionClientChoose(**kwargs)


def test_simple_invalid() -> None:
    with pytest.raises(ValueError, match="per_round must be >= 1"):
        SimpleClientChoose(per_round=0)


@pytest.mark.parametrize(
    ("clients", "round_number", "match"),
    [
        (["a", "a"], 0, "listed twice"),
        (["a", ""], 0, "non-empty strings"),
        ("ab", 0, "not a string"),
        (["a"], -1, "round_number must be >= 0"),
    ],
)
def test_choose_invalid(clients: Any, round_number: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FractionClientChoose().choose(clients, round_number)
