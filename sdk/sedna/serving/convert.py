"""The one place where OIP v2 protobuf messages and the core's domain types meet.

Request tensors come either as typed ``contents`` or as ``raw_input_contents`` (one bytes
entry per input, in input order: little-endian, row-major, no padding; BYTES elements are
each a 4-byte little-endian length and the bytes). Responses always use
``raw_output_contents``. The client side (:func:`encode_request`, :func:`decode_outputs`,
:func:`metadata_from_proto`) is here too.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from sedna.api.oip.v2 import grpc_service_pb2 as pb
from sedna.serving.errors import InvalidInputError
from sedna.serving.model import InputTensor, ModelMetadata, OutputTensor
from sedna.serving.tensors import DATATYPE_TO_NUMPY, TensorSpec, datatype_of

__all__ = [
    "JSON_CONTENT_TYPE",
    "InferRequest",
    "RequestEncoder",
    "decode_bytes_tensor",
    "decode_inputs",
    "decode_outputs",
    "encode_bytes_tensor",
    "encode_request",
    "encode_response",
    "metadata_from_proto",
    "metadata_to_proto",
    "parse_infer_request",
    "requested_outputs",
]

JSON_CONTENT_TYPE: Final = "application/json"
"""``parameters["content_type"]`` of a BYTES output that holds JSON documents."""

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
_RAW_INPUT_FIELD: Final = pb.ModelInferRequest.DESCRIPTOR.fields_by_name[
    "raw_input_contents"
].number
_RAW_INPUT_TAG: Final = (_RAW_INPUT_FIELD << 3) | 2  # length-delimited


_MAX_LENGTH_VARINT: Final = 5
"""Longest varint protobuf parsers take for a length (a 32-bit size)."""
_ALIGN: Final = 8
"""Raw entries written by :class:`RequestEncoder` start at a multiple of this offset."""
_EMPTY_ID: Final = bytes(
    ((pb.ModelInferRequest.DESCRIPTOR.fields_by_name["id"].number << 3) | 2, 0)
)
"""``id = ""`` written out (2 bytes of padding: a later ``id`` wins, none leaves it empty)."""


def _varint(value: int, width: int = 0) -> bytes:
    """``value`` as a protobuf varint, padded to ``width`` bytes (over-long but valid)."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    if len(out) < width:
        out[-1] |= 0x80
        out.extend(b"\x80" * (width - len(out) - 1))
        out.append(0)
    return bytes(out)


def _entry_header(offset: int, length: int) -> bytes:
    """What precedes a raw entry's bytes when the entry starts at ``offset`` of the message:
    its tag and length, the length varint padded and empty ``id`` fields put before it so
    that the bytes start at a multiple of :data:`_ALIGN` (when the length allows)."""
    natural = len(_varint(length))
    for pads in range(_ALIGN // 2):
        for width in range(natural, _MAX_LENGTH_VARINT + 1):
            if (offset + 2 * pads + 1 + width) % _ALIGN == 0:
                return _EMPTY_ID * pads + bytes((_RAW_INPUT_TAG,)) + _varint(length, width)
    return bytes((_RAW_INPUT_TAG,)) + _varint(length)


def _read_varint(data: memoryview, offset: int) -> tuple[int, int]:
    """The varint at ``offset`` and the offset after it; IndexError/ValueError when broken."""
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


class InferRequest:
    """A ModelInferRequest as the server reads it: the message without its raw contents,
    and the raw contents as views of the received bytes (no copy).

    Attributes
    ----------
    message
        Every field but ``raw_input_contents``.
    raw
        ``raw_input_contents``, one read-only view per entry.
    """

    __slots__ = ("message", "raw")

    def __init__(self, message: pb.ModelInferRequest, raw: Sequence[memoryview | bytes]) -> None:
        self.message = message
        self.raw = raw


def parse_infer_request(data: bytes) -> InferRequest:
    """Deserialize a ModelInferRequest without copying its ``raw_input_contents``.

    The gRPC request deserializer of ModelInfer: protobuf would copy every raw entry into
    the message and again into a ``bytes`` object when read; here they stay views of
    ``data``, and protobuf parses only the rest. Anything unusual (groups, a malformed
    message) is left to protobuf's own parser, which raises as usual.
    """
    view = memoryview(data)
    raw: list[memoryview] = []
    rest: list[memoryview] = []
    offset, end = 0, len(view)
    try:
        while offset < end:
            start = offset
            tag, offset = _read_varint(view, offset)
            wire = tag & 7
            if wire == 0:
                _, offset = _read_varint(view, offset)
            elif wire == 1:
                offset += 8
            elif wire == 5:
                offset += 4
            elif wire == 2:
                length, offset = _read_varint(view, offset)
                if tag == _RAW_INPUT_TAG:
                    if offset + length > end:
                        raise ValueError("truncated")
                    raw.append(view[offset : offset + length])
                    offset += length
                    continue
                offset += length
            else:
                raise ValueError("group")
            if offset > end:
                raise ValueError("truncated")
            rest.append(view[start:offset])
    except (IndexError, ValueError):
        message = pb.ModelInferRequest.FromString(data)
        return InferRequest(message, list(message.raw_input_contents))
    if not raw:
        return InferRequest(pb.ModelInferRequest.FromString(data), [])
    return InferRequest(pb.ModelInferRequest.FromString(b"".join(rest)), raw)


def _shape(tensor: pb.ModelInferRequest.InferInputTensor) -> tuple[int, ...]:
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidInputError(
            f"input {tensor.name!r} has shape {list(shape)}; dimensions must be >= 0"
        )
    return shape


def decode_bytes_tensor(
    name: str, raw: bytes | memoryview, count: int, role: str = "input"
) -> list[bytes]:
    """Split raw BYTES content (``<u4`` length + bytes, per element) into ``count`` elements.

    Parameters
    ----------
    name
        The tensor's name, for error messages.
    raw
        The raw content.
    count
        Expected number of elements.
    role
        ``"input"`` or ``"output"``, for error messages.

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
            raise InvalidInputError(f"{role} {name!r}: BYTES content ends inside a length prefix")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise InvalidInputError(
                f"{role} {name!r}: BYTES element {len(elements)} declares {length} bytes, "
                f"only {len(raw) - offset} left"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    if len(elements) != count:
        raise InvalidInputError(
            f"{role} {name!r}: raw BYTES content holds {len(elements)} elements, expected {count}"
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
    tensor: pb.ModelInferRequest.InferInputTensor | pb.ModelInferResponse.InferOutputTensor,
    shape: tuple[int, ...],
    raw: bytes | memoryview,
    role: str = "input",
) -> npt.NDArray[np.generic]:
    count = math.prod(shape)
    if tensor.datatype == "BYTES":
        elements = decode_bytes_tensor(tensor.name, raw, count, role)
        array = np.empty(count, dtype=np.object_)
        array[:] = elements
        return array.reshape(shape)
    dtype = DATATYPE_TO_NUMPY[tensor.datatype]
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInputError(
            f"{role} {tensor.name!r}: raw content has {len(raw)} bytes, expected {expected} "
            f"({tensor.datatype} {list(shape)}: {count} elements x {dtype.itemsize} bytes)"
        )
    array = np.frombuffer(raw, dtype=dtype.newbyteorder("<")).reshape(shape)
    if not _LITTLE_ENDIAN:
        return array.astype(dtype)
    # A view into a received message may sit at any offset: backends get aligned arrays.
    return array if array.flags.aligned else array.copy()


def _from_contents(
    tensor: pb.ModelInferRequest.InferInputTensor | pb.ModelInferResponse.InferOutputTensor,
    shape: tuple[int, ...],
    role: str = "input",
) -> npt.NDArray[np.generic]:
    field = _CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise InvalidInputError(
            f"{role} {tensor.name!r}: datatype {tensor.datatype} has no typed contents field; "
            f"send it in raw_{role}_contents"
        )
    values = getattr(tensor.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise InvalidInputError(
            f"{role} {tensor.name!r}: contents.{field} has {len(values)} elements, expected "
            f"{count} for shape {list(shape)}"
        )
    if tensor.datatype == "BYTES":
        array = np.empty(count, dtype=np.object_)
        array[:] = list(values)
        return array.reshape(shape)
    dtype = DATATYPE_TO_NUMPY[tensor.datatype]
    info = np.iinfo(dtype.name) if dtype.kind in "iu" else None
    if info is not None and count and (min(values) < info.min or max(values) > info.max):
        raise InvalidInputError(
            f"{role} {tensor.name!r}: contents.{field} has values outside the "
            f"{tensor.datatype} range [{info.min}, {info.max}]"
        )
    return np.asarray(values, dtype=dtype).reshape(shape)


def decode_inputs(request: pb.ModelInferRequest | InferRequest) -> list[InputTensor]:
    """Decode the request's input tensors.

    Parameters
    ----------
    request
        A ModelInferRequest, or one read by :func:`parse_infer_request` (its raw
        contents become arrays without a copy).

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
    raw: Sequence[memoryview | bytes]
    if isinstance(request, InferRequest):
        raw, request = request.raw, request.message
    else:
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
        tensor = response.outputs.add(
            name=output.spec.name, datatype=datatype, shape=list(array.shape)
        )
        if output.content_type is not None:
            tensor.parameters["content_type"].string_param = output.content_type
        if datatype == "BYTES":
            response.raw_output_contents.append(encode_bytes_tensor(array))
        elif _LITTLE_ENDIAN and array.dtype.byteorder in "=|<":
            response.raw_output_contents.append(array.tobytes())  # C order, one copy
        else:
            response.raw_output_contents.append(
                array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            )
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


def _spec_from_proto(tensor: pb.ModelMetadataResponse.TensorMetadata) -> TensorSpec:
    return TensorSpec(tensor.name, tensor.datatype, tuple(int(d) for d in tensor.shape))


def metadata_from_proto(response: pb.ModelMetadataResponse) -> ModelMetadata:
    """Read a ModelMetadataResponse (the client side of :func:`metadata_to_proto`)."""
    return ModelMetadata(
        name=response.name,
        versions=tuple(response.versions),
        platform=response.platform,
        inputs=tuple(_spec_from_proto(t) for t in response.inputs),
        outputs=tuple(_spec_from_proto(t) for t in response.outputs),
    )


def _raw_bytes(name: str, array: npt.NDArray[np.generic], datatype: str) -> bytes:
    if datatype == "BYTES":
        for item in array.reshape(-1).tolist():
            if not isinstance(item, str | bytes):
                raise TypeError(
                    f"input {name!r} is BYTES: every element must be str or bytes, not "
                    f"{type(item).__name__}"
                )
        return encode_bytes_tensor(array)
    little = array.astype(array.dtype.newbyteorder("<"), copy=False)
    return np.ascontiguousarray(little).tobytes()


def encode_request(
    model_name: str,
    inputs: Mapping[str, npt.NDArray[np.generic]],
    *,
    model_version: str = "",
    request_id: str = "",
) -> pb.ModelInferRequest:
    """Build a ModelInferRequest with ``raw_input_contents`` (the client side).

    Parameters
    ----------
    model_name, model_version
        The model called (an empty version: the served one).
    inputs
        Arrays by input name, already of the model's datatypes; the datatype sent is that
        of the array (strings, bytes and objects as BYTES).
    request_id
        Echoed in the response.

    Returns
    -------
    ModelInferRequest
        The request.

    Raises
    ------
    TypeError
        A dtype with no OIP datatype (e.g. complex), or a BYTES element that is neither
        ``str`` nor ``bytes``.
    """
    request = pb.ModelInferRequest(
        model_name=model_name, model_version=model_version, id=request_id
    )
    for name, array in inputs.items():
        try:
            datatype = datatype_of(array.dtype)
        except KeyError:
            raise TypeError(
                f"input {name!r} has dtype {array.dtype}, which the Open Inference Protocol "
                "cannot carry"
            ) from None
        request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
        request.raw_input_contents.append(_raw_bytes(name, array, datatype))
    return request


class RequestEncoder:
    """Builds serialized ModelInferRequests for one model, the client side of
    :func:`parse_infer_request`.

    The message without its raw contents is serialized once per input signature (names,
    datatypes, shapes) and kept; each request is each input's bytes as a
    ``raw_input_contents`` entry, then that prefix, joined in one copy
    (``encode_request`` plus protobuf serialization copy every tensor three times).

    The raw entries come first, each placed so that the tensor bytes start at a multiple
    of 8 bytes into the message (its length varint padded, over-long but within the 5
    bytes parsers take for a length, and empty ``id`` fields before it):
    :func:`parse_infer_request` then hands the backend aligned arrays that view the
    received message, with no copy. Fields in any order, repeated singular fields (the
    last wins) and over-long varints are valid protobuf: any OIP server (e.g. Triton)
    reads the same request.

    Parameters
    ----------
    model_name, model_version
        The model called (an empty version: the served one).
    """

    def __init__(self, model_name: str, model_version: str = "") -> None:
        self.model_name = model_name
        self.model_version = model_version
        self._prefixes: dict[tuple[tuple[str, str, tuple[int, ...]], ...], bytes] = {}

    def _prefix(self, signature: tuple[tuple[str, str, tuple[int, ...]], ...]) -> bytes:
        prefix = self._prefixes.get(signature)
        if prefix is None:
            request = pb.ModelInferRequest(
                model_name=self.model_name, model_version=self.model_version
            )
            for name, datatype, shape in signature:
                request.inputs.add(name=name, datatype=datatype, shape=list(shape))
            prefix = request.SerializeToString()
            if len(self._prefixes) >= 64:  # bounded: shapes may vary
                self._prefixes.clear()
            self._prefixes[signature] = prefix
        return prefix

    def encode(self, inputs: Mapping[str, npt.NDArray[np.generic]]) -> bytes:
        """The serialized request for ``inputs`` (see :func:`encode_request`).

        Raises
        ------
        TypeError
            As :func:`encode_request`.
        """
        signature: list[tuple[str, str, tuple[int, ...]]] = []
        parts: list[bytes | memoryview] = []
        offset = 0
        for name, array in inputs.items():
            try:
                datatype = datatype_of(array.dtype)
            except KeyError:
                raise TypeError(
                    f"input {name!r} has dtype {array.dtype}, which the Open Inference "
                    "Protocol cannot carry"
                ) from None
            signature.append((name, datatype, tuple(int(d) for d in array.shape)))
            data: bytes | memoryview
            if datatype == "BYTES":
                data = _raw_bytes(name, array, datatype)
            elif array.flags.c_contiguous and (
                array.dtype.byteorder in "<|" or (_LITTLE_ENDIAN and array.dtype.byteorder == "=")
            ):
                data = array.data.cast("B") if array.size else b""
            else:
                data = memoryview(_raw_bytes(name, array, datatype))
            length = data.nbytes if isinstance(data, memoryview) else len(data)
            header = _entry_header(offset, length)
            parts.append(header)
            parts.append(data)
            offset += len(header) + length
        parts.append(self._prefix(tuple(signature)))
        return b"".join(parts)


def _output_shape(tensor: pb.ModelInferResponse.InferOutputTensor) -> tuple[int, ...]:
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise InvalidInputError(
            f"output {tensor.name!r} has shape {list(shape)}; dimensions must be >= 0"
        )
    return shape


def decode_outputs(response: pb.ModelInferResponse) -> list[OutputTensor]:
    """Decode a ModelInferResponse's outputs (raw or typed contents; the client side).

    Returns
    -------
    list of OutputTensor
        In response order; BYTES outputs hold ``bytes`` elements, and ``content_type`` is
        the output's ``parameters["content_type"]`` string, if any.

    Raises
    ------
    InvalidInputError
        A malformed response: unknown datatype, wrong element or byte count, or a raw
        entry count different from the output count.
    """
    raw = response.raw_output_contents
    if raw and len(raw) != len(response.outputs):
        raise InvalidInputError(
            f"raw_output_contents has {len(raw)} entries, expected one per output "
            f"({len(response.outputs)})"
        )
    decoded: list[OutputTensor] = []
    for index, tensor in enumerate(response.outputs):
        if tensor.datatype not in DATATYPE_TO_NUMPY:
            raise InvalidInputError(
                f"output {tensor.name!r} has unsupported datatype {tensor.datatype!r}"
            )
        shape = _output_shape(tensor)
        if raw:
            data = _from_raw(tensor, shape, raw[index], "output")
        else:
            data = _from_contents(tensor, shape, "output")
        content_type = None
        if "content_type" in tensor.parameters:
            content_type = tensor.parameters["content_type"].string_param or None
        spec = TensorSpec(tensor.name, tensor.datatype, shape)
        decoded.append(OutputTensor(spec, data, content_type))
    return decoded
