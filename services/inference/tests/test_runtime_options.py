"""ONNX Runtime threads and spinning: settings, their defaults and the session they build."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sedna_inference.app import configured_loader
from sedna_inference.backends import RuntimeOptions
from sedna_inference.backends.onnx import OnnxBackend
from sedna_inference.settings import InferenceSettings, default_intra_op_threads


def test_defaults_leave_a_core_to_the_server_and_do_not_spin() -> None:
    settings = InferenceSettings()
    cpus = len(os.sched_getaffinity(0))
    assert default_intra_op_threads() == max(1, cpus - 1)
    assert settings.runtime_options() == RuntimeOptions(
        intra_op_threads=max(1, cpus - 1), inter_op_threads=0, spinning=False
    )


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEDNA_INFERENCE_INTRA_OP_THREADS", "0")
    monkeypatch.setenv("SEDNA_INFERENCE_INTER_OP_THREADS", "2")
    monkeypatch.setenv("SEDNA_INFERENCE_ORT_SPINNING", "true")
    assert InferenceSettings().runtime_options() == RuntimeOptions(0, 2, True)


def test_the_loader_builds_the_session_with_the_options(
    model_path: Path, linear_expected: Callable[[Any], Any]
) -> None:
    options = RuntimeOptions(intra_op_threads=1, inter_op_threads=1, spinning=False)
    backend = configured_loader(options)(model_path)
    assert isinstance(backend, OnnxBackend)
    session_options = backend._session.get_session_options()
    assert session_options.intra_op_num_threads == 1
    assert session_options.inter_op_num_threads == 1
    assert session_options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(backend.infer({"x": x})["y"], linear_expected(x), rtol=1e-6)
