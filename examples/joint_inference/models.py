"""The two models of the example, trained on the digits and exported for Sedna.

- **little** (edge): 2x2 average pooling of the 8x8 image to 4x4, then a multinomial logistic
  regression (scikit-learn). Cheap and clearly weaker. Exported to ONNX by hand (Reshape,
  MatMul, MatMul, Add, Softmax), so the edge needs nothing but ONNX Runtime.
- **big** (cloud): a small CNN (PyTorch) on the full 8x8 image. Exported to ONNX, to
  TorchScript with the ``model.pt.json`` sidecar that ``sedna-inference`` reads, and, on
  request, to Keras (``.keras``) and a TensorFlow SavedModel.

Both take FP32 ``image`` ``[N, 8, 8]`` (raw intensities 0..16) and return FP32
``probabilities`` ``[N, 10]``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from digits import IMAGE_SHAPE, INPUT_NAME, NUM_CLASSES, OUTPUT_NAME, PIXELS

__all__ = [
    "LittleModel",
    "export_big",
    "export_keras",
    "little_onnx",
    "onnx_predict",
    "train_big",
    "train_little",
]

MAX_INTENSITY = 16.0
POOLED = (IMAGE_SHAPE[0] // 2) * (IMAGE_SHAPE[1] // 2)


def pooling_matrix() -> npt.NDArray[np.float32]:
    """``[64, 16]``: flattened 8x8 image (0..16) to its 4x4 2x2-average, scaled to 0..1."""
    matrix = np.zeros((PIXELS, POOLED), dtype=np.float32)
    width = IMAGE_SHAPE[1]
    for row in range(IMAGE_SHAPE[0]):
        for col in range(width):
            cell = (row // 2) * (width // 2) + col // 2
            matrix[row * width + col, cell] = 1.0 / (4.0 * MAX_INTENSITY)
    return matrix


class LittleModel:
    """The fitted little model: pooling, then a linear layer and softmax.

    Parameters
    ----------
    weights
        ``[16, 10]`` coefficients of the logistic regression (transposed).
    bias
        ``[10]`` intercepts.
    """

    def __init__(self, weights: npt.NDArray[np.float32], bias: npt.NDArray[np.float32]) -> None:
        self.pool = pooling_matrix()
        self.weights = weights.astype(np.float32)
        self.bias = bias.astype(np.float32)

    def predict_proba(self, images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``[N, 10]`` class probabilities of ``[N, 8, 8]`` images."""
        logits = images.reshape(-1, PIXELS) @ self.pool @ self.weights + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        out: npt.NDArray[np.float32] = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        return out


def train_little(
    images: npt.NDArray[np.float32], labels: npt.NDArray[np.int64], seed: int
) -> LittleModel:
    """Fit the little model (logistic regression on 4x4 pooled images)."""
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415

    features = images.reshape(-1, PIXELS) @ pooling_matrix()
    regression = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    regression.fit(features, labels)
    return LittleModel(regression.coef_.T.astype(np.float32), regression.intercept_)


def little_onnx(model: LittleModel) -> bytes:
    """The little model as an ONNX graph (opset 17), serialized."""
    import onnx  # noqa: PLC0415
    from onnx import TensorProto, helper, numpy_helper  # noqa: PLC0415

    initializers = [
        numpy_helper.from_array(np.array([-1, PIXELS], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(model.pool, "pool"),
        numpy_helper.from_array(model.weights, "weights"),
        numpy_helper.from_array(model.bias, "bias"),
    ]
    nodes = [
        helper.make_node("Reshape", [INPUT_NAME, "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "pool"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "weights"], ["scores"]),
        helper.make_node("Add", ["scores", "bias"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [OUTPUT_NAME], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "digits-little",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", *IMAGE_SHAPE])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", NUM_CLASSES])],
        initializers,
    )
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="sedna-example"
    )
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def onnx_predict(path: Path, images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Run an exported ONNX model on ``[N, 8, 8]`` images with ONNX Runtime."""
    import onnxruntime as ort  # noqa: PLC0415

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run([OUTPUT_NAME], {INPUT_NAME: images.astype(np.float32)})[0]
    return np.asarray(out, dtype=np.float32)


def _cnn() -> Any:
    import torch  # noqa: PLC0415
    from torch import nn  # noqa: PLC0415

    class DigitsCNN(nn.Module):
        """Two 3x3 convolutions, 2x2 max pooling and two dense layers."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.fc1 = nn.Linear(32 * POOLED, 64)
            self.fc2 = nn.Linear(64, NUM_CLASSES)

        def logits(self, image: torch.Tensor) -> torch.Tensor:
            x = (image / MAX_INTENSITY).unsqueeze(1)
            x = torch.relu(self.conv1(x))
            x = torch.relu(self.conv2(x))
            x = torch.flatten(torch.max_pool2d(x, 2), 1)
            return self.fc2(torch.relu(self.fc1(x)))

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.logits(image), dim=1)

    return DigitsCNN()


def train_big(
    images: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    seed: int,
    epochs: int = 15,
) -> Any:
    """Train the big model (a ``torch.nn.Module``; CPU, one thread, seeded).

    Returns
    -------
    torch.nn.Module
        The trained model in eval mode; ``model(images)`` gives probabilities.
    """
    import torch  # noqa: PLC0415

    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster and deterministic
    try:
        model = _cnn()
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        generator = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), 64):
                batch = order[start : start + 64]
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(model.logits(x[batch]), y[batch])
                loss.backward()
                optimizer.step()
        model.eval()
    finally:
        torch.set_num_threads(threads)
    return model


def torch_predict(model: Any, images: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Probabilities of the in-memory big model."""
    import torch  # noqa: PLC0415

    with torch.inference_mode():
        return np.asarray(model(torch.from_numpy(images)).numpy(), dtype=np.float32)


def export_big(model: Any, out_dir: Path) -> dict[str, Path]:
    """Write ``big.onnx``, ``big.pt`` and ``big.pt.json`` into ``out_dir``.

    Returns
    -------
    dict
        Format (``onnx``, ``pt``) to path.
    """
    import torch  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    example = torch.zeros((1, *IMAGE_SHAPE), dtype=torch.float32)
    onnx_path = out_dir / "big.onnx"
    with warnings.catch_warnings():
        # torch 2.13 warns that the TorchScript-based exporter is legacy; it needs no
        # onnxscript and gives a plain opset-17 graph with a dynamic batch dimension.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(onnx_path),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
            opset_version=17,
        )
        scripted = torch.jit.trace(model, example)
        pt_path = out_dir / "big.pt"
        torch.jit.save(scripted, str(pt_path))
    sidecar = {
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *IMAGE_SHAPE]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, NUM_CLASSES]}],
    }
    pt_path.with_name(pt_path.name + ".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return {"onnx": onnx_path, "pt": pt_path}


def export_keras(
    model: Any, out_dir: Path, check_images: npt.NDArray[np.float32] | None = None
) -> dict[str, Path]:
    """Copy the big model's weights into Keras and write ``big.keras`` and ``big_savedmodel/``.

    Imports TensorFlow (several seconds), so only on request. With ``check_images``, the
    Keras model must give the PyTorch model's probabilities on them.

    Returns
    -------
    dict
        Format (``keras``, ``savedmodel``) to path.
    """
    import keras  # noqa: PLC0415

    height, width = IMAGE_SHAPE
    net = keras.Sequential(
        [
            keras.Input(shape=IMAGE_SHAPE, name=INPUT_NAME),
            keras.layers.Rescaling(1.0 / MAX_INTENSITY),
            keras.layers.Reshape((height, width, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(NUM_CLASSES, activation="softmax", name=OUTPUT_NAME),
        ],
        name="digits_big",
    )
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    conv1, conv2, dense1, dense2 = (
        layer
        for layer in net.layers
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))
    )
    # torch conv weights are [out, in, kh, kw]; Keras wants [kh, kw, in, out].
    conv1.set_weights([state["conv1.weight"].transpose(2, 3, 1, 0), state["conv1.bias"]])
    conv2.set_weights([state["conv2.weight"].transpose(2, 3, 1, 0), state["conv2.bias"]])
    # torch flattens [C, H, W], Keras [H, W, C]: reorder fc1's input features.
    channels, side = 32, IMAGE_SHAPE[0] // 2
    fc1 = state["fc1.weight"].reshape(64, channels, side, side).transpose(2, 3, 1, 0)
    dense1.set_weights([fc1.reshape(side * side * channels, 64), state["fc1.bias"]])
    dense2.set_weights([state["fc2.weight"].T, state["fc2.bias"]])
    if check_images is not None:
        np.testing.assert_allclose(
            np.asarray(net.predict(check_images, verbose=0)),
            torch_predict(model, check_images),
            atol=1e-4,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    keras_path = out_dir / "big.keras"
    net.save(keras_path)
    saved = out_dir / "big_savedmodel"
    net.export(str(saved), verbose=False)
    return {"keras": keras_path, "savedmodel": saved}
