"""TorchBackend with a tiny real nn.Module, bare and wrapped in an upstream-style estimator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sedna.backend import set_backend  # noqa: E402
from sedna.backend.torch import TorchBackend  # noqa: E402


class Net(torch.nn.Module):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: Any) -> Any:
        return torch.softmax(self.fc(x), dim=-1)


class NetEstimator:
    """Upstream style: load/predict around a module."""

    def __init__(self) -> None:
        self.net = Net()
        self.loaded: str | None = None

    def load(self, model_url: str = "") -> None:
        self.net.load_state_dict(torch.load(model_url, weights_only=True))
        self.loaded = model_url

    def predict(self, data: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.net(torch.as_tensor(np.asarray(data), dtype=torch.float32)).numpy()


def reference(net: Any, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    with torch.no_grad():
        return net(torch.as_tensor(x, dtype=torch.float32)).numpy()  # type: ignore[no-any-return]


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Any, Path]:
    net = Net()
    with torch.no_grad():
        net.fc.weight.mul_(3.0)
    path = tmp_path / "net.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_bare_module_class_predicts_numpy_after_auto_load(
    monkeypatch: pytest.MonkeyPatch, trained: tuple[Any, Path]
) -> None:
    net, path = trained
    monkeypatch.setenv("BACKEND_TYPE", "TORCH")
    monkeypatch.setenv("MODEL_URL", str(path))
    backend = set_backend(Net)
    assert isinstance(backend, TorchBackend)
    assert isinstance(backend.estimator, Net)  # a class is built at once, as upstream
    assert backend.device == "cpu"
    assert backend.model_name == "model_finetune_pytorch.pth"
    x = np.random.default_rng(1).random((5, 4))  # float64: cast to the module's float32
    result = backend.predict(x)
    assert backend.has_load
    assert isinstance(result, np.ndarray)
    assert np.allclose(result, reference(net, x), atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_module_instance_is_not_called_and_torchscript_replaces_it(
    trained: tuple[Any, Path], tmp_path: Path
) -> None:
    net, _ = trained
    scripted = tmp_path / "net.pt"
    traced = torch.jit.trace(net, torch.zeros(1, 4))
    torch.jit.save(traced, str(scripted))
    instance = Net()
    backend = TorchBackend(instance)
    assert backend.estimator is instance  # callable instance kept
    backend.load(str(scripted))
    assert isinstance(backend.estimator, torch.jit.ScriptModule)
    x = np.random.default_rng(2).random((2, 4)).astype(np.float32)
    assert np.allclose(backend.predict(x), reference(net, x), atol=1e-6)


def test_upstream_style_estimator_uses_its_own_load_and_predict(
    trained: tuple[Any, Path],
) -> None:
    net, path = trained
    backend = TorchBackend(NetEstimator, model_save_path=str(path))
    x = np.ones((1, 4), dtype=np.float32)
    result = backend.predict(x)
    assert backend.estimator.loaded == str(path)
    assert np.allclose(result, reference(net, x), atol=1e-6)


def test_save_weights_roundtrip(trained: tuple[Any, Path], tmp_path: Path) -> None:
    net, path = trained
    backend = TorchBackend(Net, model_save_path=str(tmp_path / "out"))
    backend.load(str(path))
    saved = backend.save()
    assert saved == str(tmp_path / "out" / "model_finetune_pytorch.pth")
    other = TorchBackend(Net)
    other.load(saved)
    x = np.ones((3, 4), dtype=np.float32)
    assert np.allclose(other.predict(x), reference(net, x), atol=1e-6)

    weights = backend.get_weights()
    assert [w.shape for w in weights] == [(3, 4), (3,)]
    fresh = TorchBackend(Net)
    fresh.has_load = True  # nothing to load
    fresh.set_weights([w.tolist() for w in weights])
    assert np.allclose(fresh.predict(x), reference(net, x), atol=1e-6)
    with pytest.raises(ValueError, match="expected 2 weight arrays"):
        fresh.set_weights(weights[:1])


def test_training_a_bare_module_is_refused_but_an_estimator_train_is_called() -> None:
    with pytest.raises(NotImplementedError, match="bare Net"):
        TorchBackend(Net).train([1, 2])

    class Trainable(Net):
        def train(self, train_data: Any = True, valid_data: Any = None) -> Any:  # type: ignore[override]
            if isinstance(train_data, bool):  # nn.Module's own train(mode) calls
                return super().train(train_data)
            return ("trained", len(train_data))

    assert TorchBackend(Trainable).train([1, 2, 3], ignored=1) == ("trained", 3)


def test_state_dict_of_the_wrong_kind_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.pth"
    torch.save([1, 2], path)
    with pytest.raises(ValueError, match="not a state dict"):
        TorchBackend(Net).load(str(path))
