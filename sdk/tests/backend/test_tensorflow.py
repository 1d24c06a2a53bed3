"""TFBackend / KerasBackend with a tiny real Keras Sequential model, as the upstream guide uses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from sedna.backend import set_backend  # noqa: E402
from sedna.backend.tensorflow import ConfigProto, KerasBackend, TFBackend  # noqa: E402


def build_model() -> Any:
    """The guide's factory style: ``set_backend(build_model)`` with ``BACKEND_TYPE=KERAS``."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")])
    model.compile(
        optimizer=keras.optimizers.Adam(0.02),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


@pytest.fixture
def keras_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> KerasBackend:
    monkeypatch.setenv("BACKEND_TYPE", "KERAS")
    monkeypatch.setenv("MODEL_URL", str(tmp_path / "models"))
    backend = set_backend(build_model)
    assert isinstance(backend, KerasBackend)
    return backend


def test_keras_factory_trains_predicts_evaluates(
    keras_backend: KerasBackend, digits: tuple[Any, Any]
) -> None:
    x, y = digits
    assert isinstance(keras_backend.estimator, keras.Model)  # built at once, as upstream
    history = keras_backend.train(
        (x[:1200], y[:1200]), valid_data=(x[1200:], y[1200:]), epochs=8, batch_size=64
    )
    assert "val_loss" in history.history
    probs = keras_backend.predict(x[1200:])
    assert probs.shape == (len(x) - 1200, 10)
    accuracy = float((probs.argmax(axis=1) == y[1200:]).mean())
    assert accuracy > 0.8
    _loss, metric = keras_backend.evaluate((x[1200:], y[1200:]))
    assert metric == pytest.approx(accuracy, abs=1e-6)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # Keras's
def test_keras_save_load_and_weights(
    keras_backend: KerasBackend, digits: tuple[Any, Any], tmp_path: Path
) -> None:
    x, y = digits
    keras_backend.train((x[:500], y[:500]), epochs=2)
    assert keras_backend.model_name == "model_finetune_keras.keras"
    saved = keras_backend.save()
    assert saved == str(tmp_path / "models" / "model_finetune_keras.keras")
    assert os.path.isfile(saved)

    other = KerasBackend(None)
    other.load(saved)
    assert isinstance(other.estimator, keras.Model)
    assert np.allclose(other.predict(x[:5]), keras_backend.predict(x[:5]), atol=1e-6)

    weights = keras_backend.get_weights()
    assert isinstance(weights[0], list)  # nested lists, as upstream
    fresh = KerasBackend(build_model)
    fresh.has_load = True
    fresh.set_weights(weights)
    assert np.allclose(fresh.predict(x[:5]), keras_backend.predict(x[:5]), atol=1e-6)
    fresh.set_session()  # a no-op on Keras 3


class GraphEstimator:
    """An upstream-style TensorFlow estimator (train/predict/evaluate/load/save)."""

    def __init__(self) -> None:
        self.w = tf.Variable(tf.zeros((4, 2)))
        self.loaded: str | None = None

    def train(self, train_data: Any, valid_data: Any = None, **kwargs: Any) -> dict[str, Any]:
        self.w.assign(tf.ones((4, 2)))
        return {"valid": valid_data, "epochs": kwargs.get("epochs")}

    def predict(self, data: Any, **kwargs: Any) -> Any:
        return (tf.constant(np.asarray(data, dtype=np.float32)) @ self.w).numpy()

    def evaluate(self, data: Any, **kwargs: Any) -> float:
        return 1.0

    def save(self, model_path: str) -> None:
        np.save(model_path, self.w.numpy())

    def load(self, model_url: str = "") -> None:
        self.loaded = model_url
        self.w.assign(np.load(model_url))


def test_tensorflow_backend_with_an_upstream_estimator(tmp_path: Path) -> None:
    backend = TFBackend(GraphEstimator, model_save_path=str(tmp_path / "model.npy"))
    assert backend.model_name == "model_finetune_tensorflow.pb"
    result = backend.train([[1.0] * 4], valid_data="v", epochs=3, ignored=True)
    assert result == {"valid": "v", "epochs": 3}
    saved = backend.save()
    assert saved == str(tmp_path / "model.npy")

    other = TFBackend(GraphEstimator, model_save_path=saved)
    prediction = other.predict([[1.0, 2.0, 3.0, 4.0]])  # loads model_save_path first
    assert other.estimator.loaded == saved
    assert prediction.tolist() == [[10.0, 10.0]]
    assert other.evaluate("data") == 1.0
    assert isinstance(backend.sess, tf.compat.v1.Session)
    assert isinstance(ConfigProto(), tf.compat.v1.ConfigProto)


def test_model_info_adds_the_checkpoint_dir_for_pb(tmp_path: Path) -> None:
    backend = TFBackend(GraphEstimator)
    info = backend.model_info("/home/data/job/model.PB", relpath="/home/data", result=0.9)
    assert info == [
        {"format": "pb", "url": "/job/model.PB", "metrics": 0.9},
        {"format": "ckpt", "url": "/job", "metrics": 0.9},
    ]
    assert backend.model_info("/m/model.keras") == [
        {"format": "keras", "url": "/m/model.keras", "metrics": None}
    ]
