"""The wire contracts: generated code in sync, buf lint clean, breaking changes caught."""

from __future__ import annotations

import filecmp
import importlib
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import FieldDescriptor, FileDescriptor

import sedna.api
from sedna.api.oip.v2 import grpc_service_pb2

ROOT = Path(__file__).resolve().parents[3]
BUF = Path(sys.executable).parent / "buf"


def _run_buf(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BUF), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _generated_files(root: Path) -> set[Path]:
    return {
        p.relative_to(root) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fresh = tmp_path / "sedna" / "api"
    committed = ROOT / "sdk" / "sedna" / "api"
    assert _generated_files(fresh) == _generated_files(committed), "run `make proto`"
    changed = [
        str(path)
        for path in _generated_files(fresh)
        if not filecmp.cmp(fresh / path, committed / path, shallow=False)
    ]
    assert changed == [], f"out of date with proto/, run `make proto`: {changed}"


def test_buf_lint_is_clean() -> None:
    result = _run_buf("lint", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def _copy_module(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "proto", tmp_path / "proto")
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    return tmp_path


def test_buf_breaking_accepts_an_unchanged_module(tmp_path: Path) -> None:
    workspace = _copy_module(tmp_path)
    result = _run_buf("breaking", str(workspace), "--against", str(ROOT), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("proto", "old", "new", "expected"),
    [
        pytest.param(
            "sedna/api/common/v1/tensor.proto",
            "  uint32 crc32 = 5;\n",
            "",
            'field "5" with name "crc32"',
            id="deleted-field",
        ),
        pytest.param(
            "sedna/api/common/v1/tensor.proto",
            "  bytes content = 4;",
            "  string content = 4;",
            "changed type",
            id="changed-field-type",
        ),
        pytest.param(
            "sedna/api/gm/v1/hub_service.proto",
            "  rpc Connect(stream ConnectRequest) returns (stream ConnectResponse);",
            "  rpc Connect(ConnectRequest) returns (stream ConnectResponse);",
            "client streaming",
            id="changed-streaming",
        ),
    ],
)
def test_buf_breaking_rejects_incompatible_changes(
    tmp_path: Path, proto: str, old: str, new: str, expected: str
) -> None:
    workspace = _copy_module(tmp_path)
    path = workspace / "proto" / proto
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    result = _run_buf("breaking", str(workspace), "--against", str(ROOT), cwd=ROOT)
    assert result.returncode != 0
    assert expected in (result.stdout + result.stderr)


def _file_descriptors() -> list[FileDescriptor]:
    descriptors = []
    for module_info in pkgutil.walk_packages(sedna.api.__path__, prefix="sedna.api."):
        if module_info.name.endswith("_pb2"):
            descriptors.append(importlib.import_module(module_info.name).DESCRIPTOR)
    return descriptors


def test_every_sedna_package_is_versioned() -> None:
    packages = {d.package for d in _file_descriptors()}
    assert "inference" in packages  # the Open Inference Protocol keeps its fixed name
    for package in packages - {"inference"}:
        assert package.startswith("sedna.api."), package
        assert package.rsplit(".", 1)[-1] in {"v1", "v2"}, package


def test_no_sedna_message_carries_numbers_as_repeated_floats() -> None:
    # Wire rule: tensors travel as dtype + shape + raw bytes, never as lists of floats. Only the
    # Open Inference Protocol's optional typed contents (fixed by its spec) may have them.
    float_types = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}
    offenders = []
    for file in _file_descriptors():
        if file.package == "inference":
            continue
        pending = list(file.message_types_by_name.values())
        while pending:
            message = pending.pop()
            pending.extend(message.nested_types)
            for field in message.fields:
                if field.is_repeated and field.type in float_types:
                    offenders.append(field.full_name)
    assert offenders == []


def test_open_inference_protocol_names_and_field_numbers_match_the_spec() -> None:
    service = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert {m.name for m in service.methods} == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
    }
    request = grpc_service_pb2.ModelInferRequest.DESCRIPTOR
    response = grpc_service_pb2.ModelInferResponse.DESCRIPTOR
    assert request.fields_by_name["raw_input_contents"].number == 7
    assert request.fields_by_name["inputs"].number == 5
    assert response.fields_by_name["raw_output_contents"].number == 6
    assert response.fields_by_name["outputs"].number == 5
    parameter = grpc_service_pb2.InferParameter.DESCRIPTOR
    assert [f.name for f in sorted(parameter.fields, key=lambda f: f.number)] == [
        "bool_param",
        "int64_param",
        "string_param",
        "double_param",
        "uint64_param",
    ]
