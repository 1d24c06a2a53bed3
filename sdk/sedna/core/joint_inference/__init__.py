"""Joint inference: ``JointInference`` at the edge, ``BigModelService`` in the cloud.

Upstream-compatible: ``from sedna.core.joint_inference import JointInference,
BigModelService``.
"""

from sedna.core.joint_inference.big_model import BigModelService
from sedna.core.joint_inference.joint_inference import JointInference

__all__ = ["BigModelService", "JointInference"]
