"""Where the demos keep their data by default (light: the CLI imports it at start)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["FEDERATED_LEARNING_DATA_DIR", "JOINT_INFERENCE_DATA_DIR"]

JOINT_INFERENCE_DATA_DIR = Path(".sedna") / "demo" / "joint-inference"
"""``sedna demo joint-inference --data-dir``'s default."""
FEDERATED_LEARNING_DATA_DIR = Path(".sedna") / "demo" / "federated-learning"
"""``sedna demo federated-learning --data-dir``'s default."""
