"""The Open Inference Protocol (KServe v2) serving core, shared by every Sedna model server.

The ``sedna-inference`` service (ONNX, TorchScript... models from files and URLs, hot
reload) and the SDK's ``BigModelService`` (a user estimator) both serve through it:

* :mod:`~sedna.serving.tensors`: OIP datatypes ↔ NumPy, :class:`TensorSpec`.
* :mod:`~sedna.serving.backend`: the :class:`Backend` port (a loaded model).
* :mod:`~sedna.serving.model`: :class:`ServedModel` (validation + dynamic batching).
* :mod:`~sedna.serving.batcher`: the :class:`DynamicBatcher`.
* :mod:`~sedna.serving.store`: :class:`ModelStore`, what the servicer serves.
* :mod:`~sedna.serving.convert`: the only protobuf ↔ domain conversion.
* :mod:`~sedna.serving.servicer`: the thin ``inference.GRPCInferenceService`` servicer.
* :mod:`~sedna.serving.metrics`: per-model Prometheus metrics.
"""

from sedna.serving.backend import Backend, BackendMetadata
from sedna.serving.batcher import DynamicBatcher, Tensors
from sedna.serving.errors import (
    BackendError,
    InferenceError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
)
from sedna.serving.metrics import InferenceMetrics
from sedna.serving.model import (
    InputTensor,
    ModelMetadata,
    OutputEncoder,
    OutputTensor,
    ServedModel,
    batchable,
)
from sedna.serving.servicer import (
    DEFAULT_SERVER_NAME,
    SERVICE_NAME,
    InferenceServicer,
    add_inference_service,
)
from sedna.serving.store import ModelStore, StaticModelStore
from sedna.serving.tensors import (
    DATATYPE_TO_NUMPY,
    DYNAMIC,
    TensorSpec,
    datatype_of,
    numpy_dtype,
    shape_matches,
)

__all__ = [
    "DATATYPE_TO_NUMPY",
    "DEFAULT_SERVER_NAME",
    "DYNAMIC",
    "SERVICE_NAME",
    "Backend",
    "BackendError",
    "BackendMetadata",
    "DynamicBatcher",
    "InferenceError",
    "InferenceMetrics",
    "InferenceServicer",
    "InputTensor",
    "InvalidInputError",
    "ModelMetadata",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "ModelStore",
    "OutputEncoder",
    "OutputTensor",
    "ServedModel",
    "StaticModelStore",
    "TensorSpec",
    "Tensors",
    "add_inference_service",
    "batchable",
    "datatype_of",
    "numpy_dtype",
    "shape_matches",
]
