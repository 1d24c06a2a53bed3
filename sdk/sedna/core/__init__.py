"""Upstream-compatible job classes (upstream ``sedna.core``).

* :mod:`sedna.core.base`: :class:`~sedna.core.base.JobBase`, the base of every job.
* :mod:`sedna.core.joint_inference`: ``JointInference`` (edge) and ``BigModelService``
  (cloud).

Worker scripts import the job classes from their feature package, as upstream:
``from sedna.core.joint_inference import JointInference``.
"""
