"""``sedna.tensor.crc``: the manifest's CRC-32, as zlib computes it."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from sedna.tensor import crc


@pytest.mark.parametrize("size", [0, 1, 7, 4096, 1 << 20, (1 << 20) + 13])
def test_the_same_values_as_zlib(size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    assert crc.crc32(data) == zlib.crc32(data)
    # Continued over parts, from any buffer: as zlib's running CRC.
    half = size // 2
    view = memoryview(data)
    assert crc.crc32(view[half:], crc.crc32(view[:half])) == zlib.crc32(data)
    assert crc.crc32(bytearray(data), 12345) == zlib.crc32(data, 12345)


def test_an_array_view() -> None:
    array = np.arange(1000, dtype=np.float32)
    assert crc.crc32(array.view(np.uint8).data) == zlib.crc32(array.tobytes())


def test_the_fast_implementation_is_installed() -> None:
    # A dependency of the SDK: the fallback is for platforms without its wheels.
    from isal import isal_zlib

    assert crc._crc32 is isal_zlib.crc32
