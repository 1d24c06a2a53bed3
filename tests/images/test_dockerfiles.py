"""Static checks of the service images (no container engine runs here).

Each ``docker/<service>/Dockerfile`` must build from the repository root: every file it copies
exists and survives ``.dockerignore``, the wheel's packages all reach the builder, the image is
multi-stage on a pinned slim base, runs as a numeric non-root user, and its entry point is the
service's console script as ``pyproject.toml`` declares it.
"""

from __future__ import annotations

import importlib
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
from images.dockerfile import Dockerfile, DockerIgnore, parse_dockerfile, substitute
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
PACKAGES: list[str] = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
IGNORE = DockerIgnore((ROOT / ".dockerignore").read_text())

# service -> (console script, settings class whose env vars the image sets)
SERVICES = {
    "gm": ("sedna-gm", "sedna_gm.settings:GMSettings"),
    "lc": ("sedna-lc", "sedna_lc.settings:LCSettings"),
    "kb": ("sedna-kb", "sedna_kb.settings:KBSettings"),
    "aggregator": ("sedna-aggregator", "sedna_aggregator.settings:AggregatorSettings"),
    "inference": ("sedna-inference", "sedna_inference.settings:InferenceSettings"),
}
_PINNED_TAG = re.compile(r"^[\w./-]+:[^:@]*\d+\.\d+\.\d+[^:@]*$")
_DIGEST = re.compile(r"^[\w./:-]+@sha256:[0-9a-f]{64}$")


def _load(name: str) -> Any:
    module, _, attribute = name.partition(":")
    return getattr(importlib.import_module(module), attribute)


@pytest.fixture(params=sorted(SERVICES), name="service")
def _service(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="dockerfile")
def _dockerfile(service: str) -> Dockerfile:
    path = ROOT / "docker" / service / "Dockerfile"
    assert path.is_file(), f"{path} is missing"
    return parse_dockerfile(path)


def test_every_service_with_a_console_script_has_an_image() -> None:
    services = {script for script, _ in SERVICES.values()}
    assert services == {s for s in SCRIPTS if s != "sedna"}
    assert sorted(p.name for p in (ROOT / "docker").iterdir() if p.is_dir()) == sorted(SERVICES)


def test_multi_stage_on_pinned_slim_bases(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2, "the image must be multi-stage"
    names = [stage.name for stage in dockerfile.stages]
    for index, stage in enumerate(dockerfile.stages):
        if stage.base in names[:index]:
            continue
        assert "latest" not in stage.base, f"{stage.base}: 'latest' is not a pin"
        assert _DIGEST.match(stage.base) or _PINNED_TAG.match(stage.base), (
            f"{dockerfile.path}: base {stage.base!r} is not pinned to a digest or x.y.z version"
        )
    assert "slim" in dockerfile.final.base, f"final base {dockerfile.final.base!r} is not slim"
    copied_from = {i.flags["from"] for i in dockerfile.final.all("COPY") if "from" in i.flags}
    assert copied_from, "the final stage copies nothing from a build stage"
    assert copied_from <= set(names[:-1]), f"COPY --from names unknown stages: {copied_from}"
    assert not dockerfile.final.all("ADD"), "the final stage must not ADD (use COPY --from)"


def test_copy_sources_exist_and_survive_dockerignore(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            if "from" in instruction.flags:
                continue
            *sources, _dest = instruction.args
            assert sources, f"{dockerfile.path}:{instruction.line}: COPY without a source"
            for source in sources:
                assert not re.search(r"[*?\[]", source), f"{source}: use explicit paths"
                assert (ROOT / source).exists(), (
                    f"{dockerfile.path}:{instruction.line}: {source} does not exist"
                )
                assert IGNORE.context_files(ROOT, source), (
                    f"{dockerfile.path}:{instruction.line}: .dockerignore leaves out {source}"
                )


def test_the_wheel_sources_all_reach_the_builder(dockerfile: Dockerfile) -> None:
    copied = [
        source
        for stage in dockerfile.stages[:-1]
        for instruction in stage.all("COPY")
        if "from" not in instruction.flags
        for source in instruction.args[:-1]
    ]
    # hatch needs pyproject.toml and the readme it names, and every file of every package.
    needed = ["pyproject.toml", PYPROJECT["project"]["readme"]]
    for package in PACKAGES:
        files = sorted(p for p in (ROOT / package).rglob("*") if p.is_file())
        assert any(p.suffix == ".py" for p in files), f"{package}: no modules"
        needed += [
            p.relative_to(ROOT).as_posix()
            for p in files
            if "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo"}
        ]
    for path in needed:
        assert not IGNORE.excluded(path), f".dockerignore leaves out {path}"
        assert any(path == s or path.startswith(s.rstrip("/") + "/") for s in copied), (
            f"{dockerfile.path}: nothing copies {path} into the builder"
        )


def test_entrypoint_is_the_installed_console_script(service: str, dockerfile: Dockerfile) -> None:
    script, _ = SERVICES[service]
    entrypoints = dockerfile.final.all("ENTRYPOINT")
    assert len(entrypoints) == 1, "one ENTRYPOINT in the final stage"
    entrypoint = entrypoints[0]
    assert entrypoint.json_form, "ENTRYPOINT must be the exec (JSON) form: signals reach Python"
    assert Path(entrypoint.args[0]).name == script
    assert script in SCRIPTS, f"{script} is not a console script in pyproject.toml"
    target = _load(SCRIPTS[script])
    assert callable(target), f"{SCRIPTS[script]} is not callable"


def test_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    users = dockerfile.final.all("USER")
    assert users, "the final stage has no USER: it would run as root"
    user, _, group = users[-1].args[0].partition(":")
    assert user.isdigit(), f"USER {user!r}: give a numeric uid (runAsNonRoot checks it)"
    assert int(user) != 0, "USER 0 is root"
    assert not group or (group.isdigit() and int(group) != 0), f"USER group {group!r}"
    created = " ".join(arg for run in dockerfile.final.all("RUN") for arg in run.args)
    assert f"--uid {user}" in created, f"uid {user} is not created in the final stage"


def test_extras_and_environment_match_the_project(service: str, dockerfile: Dockerfile) -> None:
    _, settings_name = SERVICES[service]
    fields = set(_load(settings_name).model_fields)
    prefix = f"SEDNA_{service.upper()}_"
    for stage in dockerfile.stages:
        for arg in stage.all("ARG"):
            name, _, default = arg.args[0].partition("=")
            if name == "SEDNA_EXTRAS":
                for extra in filter(None, default.strip("\"'").split(",")):
                    assert extra in EXTRAS, f"SEDNA_EXTRAS default names unknown extra {extra!r}"
        for env in stage.all("ENV"):
            for pair in shlex.split(env.args[0]):
                key = pair.partition("=")[0]
                if key.startswith("SEDNA_"):
                    assert key.startswith(prefix), f"{key}: not a setting of {service}"
                    assert key.removeprefix(prefix).lower() in fields, (
                        f"{key}: {settings_name} has no such setting"
                    )


def test_pip_installs_pinned_versions(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.stages:
        for run in stage.all("RUN"):
            for command in re.split(r"&&|;|\|\|", run.args[0]):
                words = shlex.split(command)
                if "pip" not in " ".join(words[:1]) or words[1:2] != ["install"]:
                    continue
                spec_args = iter(words[2:])
                for word in spec_args:
                    if word in {"--constraint", "-c", "-r"}:
                        assert next(spec_args) == "/tmp/constraints.txt"
                        continue
                    if word.startswith("-") or word.startswith("$") or word.startswith('"$'):
                        continue  # options; "$spec" is the wheel just built, with constraints
                    assert "==" in word, f"{dockerfile.path}:{run.line}: {word} is not pinned"
                if "$spec" in command or '"$spec"' in command:
                    assert "--constraint" in words, "the wheel's dependencies must be pinned"


def test_constraints_pin_every_dependency_the_images_install() -> None:
    pins: dict[str, Version] = {}
    for line in (ROOT / "docker" / "constraints.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"constraints.txt: {line!r} is not NAME==VERSION"
        pins[canonicalize_name(name)] = Version(version)
    extras = {"k8s", "postgres", "redis", "s3", "onnx", "torch", "tensorflow"}
    requirements = list(PYPROJECT["project"]["dependencies"])
    requirements += [r for extra in sorted(extras) for r in EXTRAS[extra]]
    image_platform = {"sys_platform": "linux", "platform_machine": "x86_64"}
    for raw in requirements:
        requirement = Requirement(raw)
        if requirement.marker and not requirement.marker.evaluate(image_platform):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {name} (run freeze_constraints.py)"
        public = Version(pins[name].public)  # torch's +cpu build satisfies ==2.13.0
        assert requirement.specifier.contains(public, prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}"
        )


def test_dockerignore_semantics() -> None:
    ignore = DockerIgnore("*\n!sdk/sedna\n!services/*/sedna_*\n**/__pycache__\n**/*.py[cod]\n")
    assert not ignore.excluded("sdk/sedna/core/base.py")
    assert ignore.excluded("sdk/tests/test_x.py")
    assert ignore.excluded("sdk/sedna/core/__pycache__/base.cpython-311.pyc")
    assert not ignore.excluded("services/gm/sedna_gm/app.py")
    assert ignore.excluded("services/gm/tests/test_app.py")
    assert ignore.excluded("Makefile")
    assert substitute("${PYTHON_IMAGE}", {"PYTHON_IMAGE": "python:3.11.14-slim"}) == (
        "python:3.11.14-slim"
    )
