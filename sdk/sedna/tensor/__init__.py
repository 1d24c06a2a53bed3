"""Tensors on the wire: numpy arrays to and from Sedna's ``tensor.proto`` messages.

A tensor travels as its element type (``DataType``), its shape, and its elements as raw
little-endian bytes in row-major order; nothing is ever pickled.

* :func:`to_proto` / :func:`from_proto` and :func:`to_proto_set` / :func:`from_proto_set`
  encode small tensors in one ``Tensor`` or ``TensorSet`` message. Decoding is zero-copy and
  gives read-only arrays unless ``copy=True``.
* :func:`iter_frames` / :func:`aiter_frames` stream large tensor sets as ``TensorFrame``
  messages (a manifest, then fixed-size chunks), and :class:`TensorAssembler`,
  :func:`assemble` and :func:`assemble_sync` put them back together, allocating each tensor
  once and checking sizes, order and CRC-32 on the way. A receiver that consumes chunks as
  they come instead (the aggregator's) checks the manifest with :func:`check_manifest` and
  walks the chunks with :class:`StreamCursor`, which holds the same rules.
* :mod:`sedna.tensor.dtypes` is the mapping between ``DataType`` and numpy dtypes.

Every error is a :class:`TensorError` (a :class:`ValueError`); stream protocol violations are
the subclass :class:`TensorStreamError`.
"""

from sedna.tensor._wire import NamedArrays
from sedna.tensor.codec import from_proto, from_proto_set, to_proto, to_proto_set
from sedna.tensor.dtypes import (
    data_type_name,
    from_numpy_dtype,
    itemsize,
    supported_data_types,
    to_numpy_dtype,
)
from sedna.tensor.errors import TensorError, TensorStreamError
from sedna.tensor.streaming import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_TENSORS,
    DEFAULT_MAX_TOTAL_BYTES,
    MAX_CHUNK_SIZE,
    FramePlan,
    StreamCursor,
    TensorAssembler,
    TensorLayout,
    aiter_frames,
    assemble,
    assemble_sync,
    check_manifest,
    iter_frames,
    plan_frames,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_TENSORS",
    "DEFAULT_MAX_TOTAL_BYTES",
    "MAX_CHUNK_SIZE",
    "FramePlan",
    "NamedArrays",
    "StreamCursor",
    "TensorAssembler",
    "TensorError",
    "TensorLayout",
    "TensorStreamError",
    "aiter_frames",
    "assemble",
    "assemble_sync",
    "check_manifest",
    "data_type_name",
    "from_numpy_dtype",
    "from_proto",
    "from_proto_set",
    "itemsize",
    "iter_frames",
    "plan_frames",
    "supported_data_types",
    "to_numpy_dtype",
    "to_proto",
    "to_proto_set",
]
