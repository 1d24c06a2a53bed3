"""``WeightsFile``: the aggregate out of the heap, mapped on demand; sessions use it."""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sedna_aggregator.core import Session
from sedna_aggregator.core.weights_file import WeightsFile

Array = npt.NDArray[Any]
Factory = Callable[..., Session]


def _rss_file_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile in /proc/self/status")


def test_the_arrays_are_read_only_views_of_the_written_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    layers = [
        rng.standard_normal((30, 7)).astype(np.float32),
        np.empty((0, 3), np.float32),
        rng.standard_normal(5),  # float64
        np.asfortranarray(rng.standard_normal((4, 6)).astype(np.float32)),
        np.empty(0, np.float16),
    ]
    stored = WeightsFile.write(layers, str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # unlinked from the start
    assert stored.nbytes == sum(layer.nbytes for layer in layers)
    for got, want, crc in zip(stored.arrays, layers, stored.crc32s, strict=True):
        assert got.shape == want.shape
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
        assert crc == zlib.crc32(np.ascontiguousarray(want).tobytes())
        assert not got.flags.writeable
    stored.release()
    stored.release(0, 100, 50)
    np.testing.assert_array_equal(stored.arrays[0], layers[0])  # read again after release
    stored.close()
    np.testing.assert_array_equal(stored.arrays[2], layers[2])  # the mapping outlives close


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_release_takes_the_read_pages_out_of_the_resident_set(tmp_path: Path) -> None:
    layer = np.arange(16 << 20, dtype=np.float32)  # 64 MiB
    stored = WeightsFile.write([layer], str(tmp_path))
    del layer
    before = _rss_file_kib()
    assert float(stored.arrays[0][::1024].sum()) > 0  # touches every page
    touched = _rss_file_kib()
    assert touched - before > 48 << 10  # most of the 64 MiB is now mapped
    stored.release(0, 0, 32 << 20)
    half = _rss_file_kib()
    assert touched - half > 24 << 10
    stored.release()
    assert _rss_file_kib() - before < 8 << 10


def test_an_unwritable_directory_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="No such file"):
        WeightsFile.write([np.zeros(3, np.float32)], str(tmp_path / "missing"))


async def _one_round(session: Session, make_weights: Callable[..., list[Array]]) -> Any:
    await session.join("a", 10)
    await session.join("b", 30)
    for k, cid in enumerate("ab"):
        await session.submit_update(cid, 1, make_weights(k), 10 * (k + 1))
    return await session.wait_for_round(1)


async def test_a_session_keeps_the_aggregate_in_a_file(
    make_session: Factory, make_weights: Callable[..., list[Array]], tmp_path: Path
) -> None:
    session = make_session(
        exit_round=2, min_participants=2, session_kwargs={"weights_dir": str(tmp_path)}
    )
    result = await _one_round(session, make_weights)
    assert result.stored is not None
    assert result.weights is result.stored.arrays
    assert session.global_weights is result.stored.arrays
    pairs = zip(make_weights(0), make_weights(1), strict=True)
    expected = [(10 * a + 20 * b) / 30 for a, b in pairs]
    for got, want in zip(result.weights, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    # The next round starts from it like from any other weights.
    for k, cid in enumerate("ab"):
        await session.submit_update(cid, 2, make_weights(5 + k), 10)
    second = await session.wait_for_round(2)
    assert second.stored is not None
    await session.aclose()


async def test_without_a_file_or_when_it_cannot_be_written_the_aggregate_stays_in_memory(
    make_session: Factory,
    make_weights: Callable[..., list[Array]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    in_memory = make_session(
        exit_round=1, min_participants=2, session_kwargs={"weights_dir": False}
    )
    result = await _one_round(in_memory, make_weights)
    assert result.stored is None
    assert all(layer.flags.writeable for layer in result.weights or [])

    broken = make_session(
        exit_round=1,
        min_participants=2,
        session_kwargs={"weights_dir": str(tmp_path / "missing")},
    )
    result = await _one_round(broken, make_weights)
    assert result.stored is None
    assert result.weights is not None
    assert "stays in memory" in caplog.text
    assert "missing" in caplog.text
