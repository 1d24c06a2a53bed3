"""Transmitters of federated learning (upstream ``sedna.algorithms.transmitter``).

``WSTransmitter``: weights inside the aggregation call (gRPC streaming); ``S3Transmitter``:
weights as safetensors objects in S3, only their URIs in the call. See
:mod:`sedna.algorithms.transmitter.transmitter`; the object format is
:mod:`sedna.algorithms.transmitter.safetensors_codec`.
"""

from sedna.algorithms.transmitter.s3 import S3ObjectError
from sedna.algorithms.transmitter.safetensors_codec import SafetensorsError
from sedna.algorithms.transmitter.transmitter import (
    DEFAULT_MAX_OBJECT_BYTES,
    AbstractTransmitter,
    S3Transmitter,
    TransmitterError,
    WSTransmitter,
    get_transmitter_from_config,
)

__all__ = [
    "DEFAULT_MAX_OBJECT_BYTES",
    "AbstractTransmitter",
    "S3ObjectError",
    "S3Transmitter",
    "SafetensorsError",
    "TransmitterError",
    "WSTransmitter",
    "get_transmitter_from_config",
]
