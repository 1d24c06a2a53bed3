"""glibc malloc tuning (sedna.runtime.memory): applied once, with opt-outs."""

from __future__ import annotations

import pytest

from sedna.runtime import memory


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget whether this process was tuned already (restored after the test)."""
    monkeypatch.setattr(memory, "_applied", None)


class FakeLibc:
    def __init__(self, accept: bool = True) -> None:
        self.calls: list[tuple[int, int]] = []
        self.accept = accept

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1 if self.accept else 0


def test_raises_the_mmap_and_trim_thresholds_once(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(memory, "_glibc", lambda: libc)
    assert memory.tune_malloc({}) == memory.DEFAULT_MMAP_THRESHOLD
    threshold = memory.DEFAULT_MMAP_THRESHOLD
    assert libc.calls == [(-3, threshold), (-1, 4 * threshold)]
    assert memory.tune_malloc({}) == threshold
    assert len(libc.calls) == 2


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({memory.MMAP_THRESHOLD_ENV: "0"}, 0),
        ({"MALLOC_MMAP_THRESHOLD_": "131072"}, 0),
        ({memory.MMAP_THRESHOLD_ENV: "1048576"}, 1048576),
        ({memory.MMAP_THRESHOLD_ENV: "lots"}, memory.DEFAULT_MMAP_THRESHOLD),
    ],
)
def test_environment_opt_outs_and_overrides(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], expected: int
) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(memory, "_glibc", lambda: libc)
    assert memory.tune_malloc(environ) == expected
    assert bool(libc.calls) == bool(expected)


def test_no_glibc_or_a_refusal_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert memory.tune_malloc({}) == 0
    monkeypatch.setattr(memory, "_applied", None)
    libc = FakeLibc(accept=False)
    monkeypatch.setattr(memory, "_glibc", lambda: libc)
    assert memory.tune_malloc({}) == 0
    assert libc.calls == [(-3, memory.DEFAULT_MMAP_THRESHOLD)]


def test_the_real_c_library_accepts_the_default() -> None:
    if memory._glibc() is None:
        pytest.skip("not glibc")
    assert memory.tune_malloc({}) == memory.DEFAULT_MMAP_THRESHOLD


def test_a_service_chooses_its_own_default_and_the_environment_still_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(memory, "_glibc", lambda: libc)
    assert memory.tune_malloc({}, default=8 << 20) == 8 << 20
    assert libc.calls == [(-3, 8 << 20), (-1, 32 << 20)]
    monkeypatch.setattr(memory, "_applied", None)
    environ = {memory.MMAP_THRESHOLD_ENV: "1048576"}
    assert memory.tune_malloc(environ, default=8 << 20) == 1048576
    monkeypatch.setattr(memory, "_applied", None)
    assert memory.tune_malloc({memory.MMAP_THRESHOLD_ENV: "lots"}, default=8 << 20) == 8 << 20


def test_an_aggregation_client_tunes_its_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # Trainers copy a model through chunk buffers every round (as inference clients do).
    from sedna.service.aggregation_client import AggregationClient

    libc = FakeLibc()
    monkeypatch.setattr(memory, "_glibc", lambda: libc)
    monkeypatch.delenv(memory.MMAP_THRESHOLD_ENV, raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    with AggregationClient("127.0.0.1", 1):
        pass
    assert libc.calls[0] == (-3, memory.DEFAULT_MMAP_THRESHOLD)


def test_arenas_are_capped_unless_glibc_s_own_variable_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(memory, "_glibc", lambda: libc)
    assert memory.limit_malloc_arenas(1, {}) is True
    assert libc.calls == [(-8, 1)]
    assert memory.limit_malloc_arenas(2, {"MALLOC_ARENA_MAX": "4"}) is False
    assert libc.calls == [(-8, 1)]
    monkeypatch.setattr(memory, "_glibc", lambda: FakeLibc(accept=False))
    assert memory.limit_malloc_arenas(1, {}) is False
    monkeypatch.setattr(memory, "_glibc", lambda: None)
    assert memory.limit_malloc_arenas(1, {}) is False


def test_an_arena_cap_below_one_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="arenas must be >= 1, not 0"):
        memory.limit_malloc_arenas(0, {})
