"""The DataType <-> numpy dtype mapping."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from sedna.api.common.v1.tensor_pb2 import DataType
from sedna.tensor import (
    TensorError,
    data_type_name,
    from_numpy_dtype,
    itemsize,
    supported_data_types,
    to_numpy_dtype,
)
from sedna.tensor import dtypes as dtypes_module

NATIVE = {
    DataType.DATA_TYPE_BOOL: np.bool_,
    DataType.DATA_TYPE_UINT8: np.uint8,
    DataType.DATA_TYPE_INT8: np.int8,
    DataType.DATA_TYPE_UINT16: np.uint16,
    DataType.DATA_TYPE_INT16: np.int16,
    DataType.DATA_TYPE_UINT32: np.uint32,
    DataType.DATA_TYPE_INT32: np.int32,
    DataType.DATA_TYPE_UINT64: np.uint64,
    DataType.DATA_TYPE_INT64: np.int64,
    DataType.DATA_TYPE_FLOAT16: np.float16,
    DataType.DATA_TYPE_FLOAT32: np.float32,
    DataType.DATA_TYPE_FLOAT64: np.float64,
    DataType.DATA_TYPE_COMPLEX64: np.complex64,
    DataType.DATA_TYPE_COMPLEX128: np.complex128,
}


@pytest.fixture
def without_ml_dtypes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A None entry in sys.modules makes the import fail, as if the package were not installed.
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    dtypes_module._bfloat16.cache_clear()
    yield
    dtypes_module._bfloat16.cache_clear()


@pytest.mark.parametrize(("data_type", "scalar_type"), NATIVE.items())
def test_native_types_map_both_ways(data_type: int, scalar_type: type[np.generic]) -> None:
    dtype = to_numpy_dtype(data_type)
    assert dtype == np.dtype(scalar_type)
    assert dtype.str[0] in "<|"  # little-endian whatever the host
    assert from_numpy_dtype(scalar_type) == data_type
    assert itemsize(data_type) == dtype.itemsize


@pytest.mark.parametrize("scalar_type", [t for t in NATIVE.values() if np.dtype(t).itemsize > 1])
def test_byte_order_does_not_change_the_data_type(scalar_type: type[np.generic]) -> None:
    native = np.dtype(scalar_type)
    assert from_numpy_dtype(native.newbyteorder(">")) == from_numpy_dtype(native)
    assert from_numpy_dtype(native.newbyteorder("<")) == from_numpy_dtype(native)


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        (np.intc, DataType.DATA_TYPE_INT32),
        (np.longlong, DataType.DATA_TYPE_INT64),
        (np.ulonglong, DataType.DATA_TYPE_UINT64),
        (np.intp, DataType.DATA_TYPE_INT64),
        ("f4", DataType.DATA_TYPE_FLOAT32),
        (">c16", DataType.DATA_TYPE_COMPLEX128),
        (bool, DataType.DATA_TYPE_BOOL),
        (float, DataType.DATA_TYPE_FLOAT64),
    ],
)
def test_aliases_of_one_type_map_alike(alias: object, expected: int) -> None:
    assert from_numpy_dtype(alias) == expected  # type: ignore[arg-type]


def test_every_enum_value_has_an_itemsize() -> None:
    # Fails when tensor.proto grows a DataType that dtypes.py does not know yet.
    for value in DataType.values():
        if value != DataType.DATA_TYPE_UNSPECIFIED:
            assert itemsize(value) > 0, DataType.Name(value)


def test_bfloat16_itemsize_needs_no_ml_dtypes(without_ml_dtypes: None) -> None:
    assert itemsize(DataType.DATA_TYPE_BFLOAT16) == 2


UNSUPPORTED = [
    np.dtype(object),
    np.dtype("U3"),
    np.dtype("S3"),
    np.dtype("V4"),
    np.dtype("datetime64[s]"),
    np.dtype("timedelta64[ns]"),
    np.dtype([("x", "<f4"), ("y", "<i4")]),
    np.dtype(("<f4", (2,))),
]
if np.dtype(np.longdouble).itemsize > 8:  # where longdouble is not just float64
    UNSUPPORTED += [np.dtype(np.longdouble), np.dtype(np.clongdouble)]


@pytest.mark.parametrize("dtype", UNSUPPORTED, ids=str)
def test_unsupported_numpy_dtypes_are_named(dtype: np.dtype[np.generic]) -> None:
    with pytest.raises(TensorError, match="unsupported numpy dtype") as info:
        from_numpy_dtype(dtype)
    assert repr(str(dtype)) in str(info.value)


def test_garbage_dtype_is_a_tensor_error() -> None:
    with pytest.raises(TensorError, match="not a numpy dtype"):
        from_numpy_dtype("no-such-dtype")


@pytest.mark.parametrize("value", [16, 99, 2**31 - 1, -1])
def test_unknown_enum_values_are_named(value: int) -> None:
    for call in (to_numpy_dtype, itemsize):
        with pytest.raises(TensorError, match=rf"unknown DataType value {value}\b.*newer peer"):
            call(value)


def test_unspecified_is_refused() -> None:
    with pytest.raises(TensorError, match="DATA_TYPE_UNSPECIFIED"):
        to_numpy_dtype(DataType.DATA_TYPE_UNSPECIFIED)
    with pytest.raises(TensorError, match="DATA_TYPE_UNSPECIFIED"):
        itemsize(DataType.DATA_TYPE_UNSPECIFIED)


def test_data_type_name() -> None:
    assert data_type_name(DataType.DATA_TYPE_FLOAT32) == "DATA_TYPE_FLOAT32"
    assert data_type_name(99) == "DataType(99)"


def test_bfloat16_without_ml_dtypes_says_what_to_install(without_ml_dtypes: None) -> None:
    with pytest.raises(TensorError, match=r"ml_dtypes.*not installed"):
        to_numpy_dtype(DataType.DATA_TYPE_BFLOAT16)
    assert DataType.DATA_TYPE_BFLOAT16 not in supported_data_types()


def test_supported_data_types_lists_every_native_type() -> None:
    supported = supported_data_types()
    assert set(NATIVE) <= set(supported)
    assert DataType.DATA_TYPE_UNSPECIFIED not in supported
    assert list(supported) == sorted(supported)


def test_bfloat16_with_ml_dtypes() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dtypes_module._bfloat16.cache_clear()
    bfloat16 = np.dtype(ml_dtypes.bfloat16)
    assert to_numpy_dtype(DataType.DATA_TYPE_BFLOAT16) == bfloat16
    assert from_numpy_dtype(bfloat16) == DataType.DATA_TYPE_BFLOAT16
    assert DataType.DATA_TYPE_BFLOAT16 in supported_data_types()
    # Other ml_dtypes extension types have no wire type and must not pass for a native one.
    with pytest.raises(TensorError, match="unsupported numpy dtype"):
        from_numpy_dtype(ml_dtypes.float8_e4m3fn)


def test_plain_dtypes_do_not_import_ml_dtypes() -> None:
    """Importing ml_dtypes takes about a second (it registers its ufunc loops): an aggregator
    paid it on its first pull, and every trainer on its first push, for float32 weights."""
    code = (
        "import sys, numpy as np\n"
        "from sedna.tensor.dtypes import from_numpy_dtype\n"
        "for t in (np.float32, np.float64, np.float16, np.int64, np.bool_, np.complex64):\n"
        "    from_numpy_dtype(t)\n"
        "assert 'ml_dtypes' not in sys.modules, 'ml_dtypes was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
