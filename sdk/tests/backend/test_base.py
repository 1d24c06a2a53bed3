"""BackendBase (upstream "use itself"): lazy instantiation, kwargs filtering, model files.

The real model is scikit-learn's LogisticRegression on the digits data set, as a
``BACKEND_TYPE=SKLEARN`` worker would use it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from sedna.backend import BackendBase, set_backend
from sedna.backend.base import is_factory


class DigitsEstimator:
    """An upstream-style estimator around LogisticRegression; saves weights as .npz."""

    instances = 0

    def __init__(self, C: float = 1.0, **kwargs: Any) -> None:  # noqa: N803 - sklearn's name
        DigitsEstimator.instances += 1
        self.C = C
        self.extra = kwargs
        self.model = LogisticRegression(C=C, max_iter=500)

    def train(self, train_data: Any, valid_data: Any = None, **kwargs: Any) -> dict[str, float]:
        x, y = train_data
        self.model.fit(x, y)
        score = float(self.model.score(*valid_data)) if valid_data is not None else 0.0
        return {"accuracy": score}

    def predict(self, data: Any, **kwargs: Any) -> Any:
        return self.model.predict(np.asarray(data))

    def predict_proba(self, data: Any) -> Any:
        return self.model.predict_proba(np.asarray(data))

    def evaluate(self, data: Any, **kwargs: Any) -> float:
        x, y = data
        return float(self.model.score(x, y))

    def save(self, model_path: str) -> str:
        with open(model_path, "wb") as out:
            np.savez(
                out,
                coef=self.model.coef_,
                intercept=self.model.intercept_,
                classes=self.model.classes_,
            )
        return model_path

    def load(self, model_url: str = "") -> None:
        with np.load(model_url, allow_pickle=False) as data:
            self.model.coef_ = data["coef"]
            self.model.intercept_ = data["intercept"]
            self.model.classes_ = data["classes"]


def split(digits: tuple[Any, Any]) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    x, y = digits
    return (x[:1200], y[:1200]), (x[1200:], y[1200:])


@pytest.fixture
def sklearn_backend(monkeypatch: pytest.MonkeyPatch) -> BackendBase:
    monkeypatch.setenv("BACKEND_TYPE", "SKLEARN")
    with pytest.warns(UserWarning, match="SKLEARN Not Support yet, use itself"):
        backend = set_backend(DigitsEstimator)
    assert backend is not None
    return backend


def test_class_estimator_is_built_lazily_with_accepted_kwargs(
    sklearn_backend: BackendBase, digits: tuple[Any, Any]
) -> None:
    train, valid = split(digits)
    assert isinstance(sklearn_backend.estimator, type)  # not built yet
    result = sklearn_backend.train(train, valid_data=valid, C=0.5, max_iter=3)
    estimator = sklearn_backend.estimator
    assert isinstance(estimator, DigitsEstimator)
    assert estimator.C == 0.5
    assert set(estimator.extra) == {"valid_data", "max_iter"}  # **kwargs takes them all
    assert result["accuracy"] > 0.9


def test_predict_evaluate_and_proba(sklearn_backend: BackendBase, digits: tuple[Any, Any]) -> None:
    train, valid = split(digits)
    sklearn_backend.train(train, valid_data=valid)
    predicted = sklearn_backend.predict(valid[0][:10], unknown_kwarg=1)
    assert predicted.shape == (10,)
    proba = sklearn_backend.predict_proba(valid[0][:10], not_accepted=True)
    assert proba.shape == (10, 10)
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert sklearn_backend.evaluate(valid) > 0.9


def test_save_load_roundtrip_with_default_name(
    sklearn_backend: BackendBase, digits: tuple[Any, Any], tmp_path: Path
) -> None:
    train, valid = split(digits)
    sklearn_backend.train(train)
    sklearn_backend.model_save_path = str(tmp_path)
    saved = sklearn_backend.save()
    assert saved == str(tmp_path / "model_finetune_.pkl")  # upstream's default name
    uploaded = sklearn_backend.save(model_url=str(tmp_path / "out" / "digits.npz"))
    assert uploaded == str(tmp_path / "out" / "digits.npz")
    assert os.path.isfile(uploaded)
    assert not os.path.exists(saved)  # upload removes the local copy, as upstream
    sklearn_backend.save()

    fresh = BackendBase(DigitsEstimator, model_save_path=str(tmp_path))
    fresh.load(uploaded)
    assert fresh.has_load
    assert fresh.model_path == uploaded
    assert np.array_equal(fresh.predict(valid[0]), sklearn_backend.predict(valid[0]))

    # A directory resolves to <dir>/<model_name>.
    by_dir = BackendBase(DigitsEstimator, model_name="model_finetune_.pkl")
    by_dir.load(str(tmp_path))
    assert by_dir.model_path == str(tmp_path / "model_finetune_.pkl")
    by_url = BackendBase(DigitsEstimator)
    by_url.load(f"file://{uploaded}")
    assert by_url.model_path == uploaded


def test_load_of_a_missing_model_keeps_the_estimator(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = BackendBase(DigitsEstimator)
    assert backend.load(str(tmp_path / "nope.npz")) is None
    assert backend.has_load
    assert isinstance(backend.estimator, DigitsEstimator)
    assert "does not exist" in caplog.text


def test_load_passes_the_path_positionally_when_model_url_is_not_accepted(
    tmp_path: Path,
) -> None:
    seen: list[str] = []

    class PositionalLoad:
        def load(self, path: str) -> str:
            seen.append(path)
            return "loaded"

    model = tmp_path / "m.bin"
    model.write_bytes(b"x")
    assert BackendBase(PositionalLoad()).load(str(model)) == "loaded"
    assert seen == [str(model)]


def test_bare_sklearn_instance_is_used_as_is(digits: tuple[Any, Any]) -> None:
    x, y = digits
    model = LogisticRegression(max_iter=500)
    backend = BackendBase(model)
    backend.train(x[:1000], y[:1000])  # fit() is preferred over train(), as upstream
    assert backend.estimator is model
    assert (backend.predict(x[1000:]) == y[1000:]).mean() > 0.9


def test_train_falls_back_to_train_and_update_to_update() -> None:
    calls: list[tuple[str, Any]] = []

    class Trainer:
        def train(self, data: Any, epochs: int = 1) -> str:
            calls.append(("train", (data, epochs)))
            return "trained"

        def update(self, data: Any) -> str:
            calls.append(("update", data))
            return "updated"

    backend = BackendBase(Trainer)
    assert backend.train("d", epochs=2, ignored=True) == "trained"
    assert backend.update("e", ignored=True) == "updated"
    assert calls == [("train", ("d", 2)), ("update", "e")]


def test_missing_method_names_the_estimator() -> None:
    backend = BackendBase(object())
    with pytest.raises(AttributeError, match=r"object has no fit\(\) or train\(\)"):
        backend.train()
    with pytest.raises(NotImplementedError, match="get_weights"):
        backend.get_weights()
    with pytest.raises(NotImplementedError, match="set_weights"):
        backend.set_weights([])


def test_weights_are_delegated_when_the_estimator_has_them() -> None:
    class Weighted:
        weights: Any = [1, 2]

        def get_weights(self) -> Any:
            return self.weights

        def set_weights(self, weights: Any) -> None:
            self.weights = weights

    backend = BackendBase(Weighted())
    assert backend.get_weights() == [1, 2]
    backend.set_weights([3])
    assert backend.get_weights() == [3]


def test_parse_kwargs() -> None:
    def explicit(a: int, *, b: int = 0) -> None: ...

    def with_kwargs(a: int, **kw: Any) -> None: ...

    assert BackendBase.parse_kwargs(explicit, a=1, b=2, c=3) == {"a": 1, "b": 2}
    assert BackendBase.parse_kwargs(with_kwargs, a=1, c=3) == {"a": 1, "c": 3}
    assert BackendBase.parse_kwargs("not callable", a=1) == {"a": 1}
    assert BackendBase.parse_kwargs(DigitsEstimator, C=2, x=1) == {"C": 2, "x": 1}


def test_model_name_and_model_info() -> None:
    backend = BackendBase(object(), fine_tune=False)
    assert backend.model_name == "model.pkl"
    backend.framework = "pytorch"
    assert backend.model_name == "modelpytorch.pth"
    assert BackendBase(object(), model_name="m.onnx").model_name == "m.onnx"
    info = backend.model_info("/home/data/out/m.pb", relpath="/home/data", result={"acc": 1})
    assert info == [{"format": "pb", "url": "/out/m.pb", "metrics": {"acc": 1}}]


def test_is_factory() -> None:
    class CallableModel:
        def __call__(self) -> None: ...

    assert is_factory(DigitsEstimator)
    assert is_factory(lambda: None)
    assert not is_factory(CallableModel())  # a callable *instance* is a model, not a factory
    assert not is_factory(LogisticRegression())
