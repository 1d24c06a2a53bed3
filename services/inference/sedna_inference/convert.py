"""The one place where OIP v2 protobuf messages and the core's domain types meet.

Request tensors come either as typed ``contents`` or as ``raw_input_contents`` (one bytes
entry per input, in input order: little-endian, row-major, no padding; BYTES elements are
each a 4-byte little-endian length and the bytes). Responses always use
``raw_output_contents``.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from sedna.api.oip.v2 import grpc_service_pb2 as pb
from sedna_inference.errors import InvalidInputError
from sedna_inference.repository import InputTensor, ModelMetadata, OutputTensor
from sedna_inference.tensors import DATATYPE_TO_NUMPY, TensorSpec, datatype_of

__all__ = [
    "decode_bytes_tensor",
    "decode_inputs",
    "encode_bytes_tensor",
    "encode_response",
    "metadata_to_proto",
    "requested_outputs",
]

_CONTENTS_FIELD: Final[dict[str, str]] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
"""Datatype → typed ``InferTensorContents`` field (FP16 has none: raw only)."""

_LITTLE_ENDIAN: Final = sys.byteorder == "little"
_LENGTH: Final = struct.Struct("<I")


def _shape(tensor: pb.ModelInferRequest.InferInputTensor) -> tuple[int, ...]:
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidInputError(
            f"input {tensor.name!r} has shape {list(shape)}; dimensions must be >= 0"
        )
    return shape


def decode_bytes_tensor(name: str, raw: bytes, count: int) -> list[bytes]:
    """Split raw BYTES content (``<u4`` length + bytes, per element) into ``count`` elements.

    Raises
    ------
    InvalidInputError
        Truncated content, or a different number of elements than ``count``.
    """
    elements: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw):
        if offset + _LENGTH.size > len(raw):
            raise InvalidInputError(f"input {name!r}: BYTES content ends inside a length prefix")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise InvalidInputError(
                f"input {name!r}: BYTES element {len(elements)} declares {length} bytes, "
                f"only {len(raw) - offset} left"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    if len(elements) != count:
        raise InvalidInputError(
            f"input {name!r}: raw BYTES content holds {len(elements)} elements, expected {count}"
        )
    return elements


def encode_bytes_tensor(array: npt.NDArray[np.generic]) -> bytes:
    """Encode a BYTES tensor as raw content (row-major, length-prefixed elements)."""
    parts: list[bytes] = []
    for item in array.reshape(-1).tolist():
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def _from_raw(
    tensor: pb.ModelInferRequest.InferInputTensor, shape: tuple[int, ...], raw: bytes
) -> npt.NDArray[np.generic]:
    count = math.prod(shape)
    if tensor.datatype == "BYTES":
        elements = decode_bytes_tensor(tensor.name, raw, count)
        return np.array(elements, dtype=np.object_).reshape(shape)
    dtype = DATATYPE_TO_NUMPY[tensor.datatype]
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInputError(
            f"input {tensor.name!r}: raw content has {len(raw)} bytes, expected {expected} "
            f"({tensor.datatype} {list(shape)}: {count} elements x {dtype.itemsize} bytes)"
        )
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
    return array if _LITTLE_ENDIAN else array.astype(dtype)


def _from_contents(
    tensor: pb.ModelInferRequest.InferInputTensor, shape: tuple[int, ...]
) -> npt.NDArray[np.generic]:
    field = _CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidInputError(
            f"input {tensor.name!r}: datatype {tensor.datatype} has no typed contents field; "
            "send it in raw_input_contents"
        )
    values = getattr(tensor.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInputError(
            f"input {tensor.name!r}: contents.{field} has {len(values)} elements, expected "
            f"{count} for shape {list(shape)}"
        )
    if tensor.datatype == "BYTES":
        return np.array(list(values), dtype=np.object_).reshape(shape)
    dtype = DATATYPE_TO_NUMPY[tensor.datatype]
    info = np.iinfo(dtype.name) if dtype.kind in "iu" else None
    if info is not None and count and (min(values) < info.min or max(values) > info.max):
        raise InvalidInputError(
            f"input {tensor.name!r}: contents.{field} has values outside the {tensor.datatype} "
            f"range [{info.min}, {info.max}]"
        )
    return np.asarray(values, dtype=dtype).reshape(shape)


def decode_inputs(request: pb.ModelInferRequest) -> list[InputTensor]:
    """Decode the request's input tensors.

    Parameters
    ----------
    request
        A ModelInferRequest.

    Returns
    -------
    list of InputTensor
        In request order.

    Raises
    ------
    InvalidInputError
        Unknown datatype, negative dimension, wrong element or byte count, raw and typed
        contents mixed, or a raw entry count different from the input count.
    """
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries, expected one per input "
            f"({len(request.inputs)})"
        )
    decoded: list[InputTensor] = []
    for index, tensor in enumerate(request.inputs):
        if tensor.datatype not in DATATYPE_TO_NUMPY:
            supported = ", ".join(DATATYPE_TO_NUMPY)
            raise InvalidInputError(
                f"input {tensor.name!r} has unsupported datatype {tensor.datatype!r}; "
                f"supported: {supported}"
            )
        shape = _shape(tensor)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInputError(
                    f"input {tensor.name!r} sets contents although raw_input_contents is used"
                )
            data = _from_raw(tensor, shape, raw[index])
        else:
            data = _from_contents(tensor, shape)
        decoded.append(InputTensor(tensor.name, tensor.datatype, shape, data))
    return decoded


def requested_outputs(request: pb.ModelInferRequest) -> list[str]:
    """Names of the outputs the client asked for (empty: all)."""
    return [o.name for o in request.outputs]


def encode_response(
    request: pb.ModelInferRequest, version: str, outputs: Sequence[OutputTensor]
) -> pb.ModelInferResponse:
    """Build the ModelInferResponse with ``raw_output_contents``."""
    response = pb.ModelInferResponse(
        model_name=request.model_name, model_version=version, id=request.id
    )
    for output in outputs:
        array = output.data
        datatype = datatype_of(array.dtype)
        response.outputs.add(name=output.spec.name, datatype=datatype, shape=list(array.shape))
        if datatype == "BYTES":
            response.raw_output_contents.append(encode_bytes_tensor(array))
        else:
            little = array.astype(array.dtype.newbyteorder("<"), copy=False)
            response.raw_output_contents.append(np.ascontiguousarray(little).tobytes())
    return response


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype, shape=list(spec.shape)
    )


def metadata_to_proto(meta: ModelMetadata) -> pb.ModelMetadataResponse:
    """Build a ModelMetadataResponse."""
    return pb.ModelMetadataResponse(
        name=meta.name,
        versions=list(meta.versions),
        platform=meta.platform,
        inputs=[_tensor_metadata(t) for t in meta.inputs],
        outputs=[_tensor_metadata(t) for t in meta.outputs],
    )
