"""The JointInferenceService controller: cloud and edge workers, their Service and status.

- :mod:`.workers`: the two workers and their environment contract;
- :mod:`.models`: the Models the workers load and their Secrets;
- :mod:`.status`: phase and conditions from the workers' states;
- :mod:`.metrics`: the edge counters as Prometheus gauges;
- :mod:`.controller`: the reconciler, the report handler and its setup.
"""

from sedna_gm.controllers.jointinference.controller import (
    CONTROLLER_NAME,
    KIND,
    JointInferenceController,
    setup_joint_inference_controller,
)
from sedna_gm.controllers.jointinference.metrics import EdgeMetrics
from sedna_gm.controllers.jointinference.models import ModelSecretError, resolve_s3_secret

__all__ = [
    "CONTROLLER_NAME",
    "KIND",
    "EdgeMetrics",
    "JointInferenceController",
    "ModelSecretError",
    "resolve_s3_secret",
    "setup_joint_inference_controller",
]
