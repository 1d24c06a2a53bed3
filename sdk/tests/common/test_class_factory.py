"""ClassFactory / ClassType: upstream names, registration, lookup and error messages."""

from __future__ import annotations

import logging
import types
from collections.abc import Iterator
from typing import Any

import pytest

from sedna.common.class_factory import ClassFactory, ClassType


@pytest.fixture(autouse=True)
def _isolated_registry() -> Iterator[None]:
    """Restore the process-wide registry after each test."""
    saved = {type_name: dict(group) for type_name, group in ClassFactory.__registry__.items()}
    yield
    ClassFactory.__registry__.clear()
    ClassFactory.__registry__.update(saved)


def test_class_type_values_are_upstreams() -> None:
    values = {
        name: value
        for name, value in vars(ClassType).items()
        if not name.startswith("_") and isinstance(value, str)
    }
    assert values == {
        "GENERAL": "general",
        "HEM": "hard_example_mining",
        "FL_AGG": "aggregation",
        "MTL": "multi_task_learening",
        "UTD": "unseen_task_detect",
        "OF": "optical_flow",
        "ALGORITHM": "algorithm",
        "DATASET": "data_process",
        "CALLBACK": "post_process_callback",
        "UTP": "unseen_task_processing",
        "KM": "knowledge_management",
        "STP": "seen_task_processing",
    }


def test_register_user_class_and_get_by_alias() -> None:
    @ClassFactory.register(ClassType.HEM, alias="MyRule")
    class MyRule:
        def __init__(self, level: str = "0.5") -> None:
            self.level = float(level)

        def __call__(self, infer_result: Any = None) -> bool:
            return True

    assert ClassFactory.is_exists(ClassType.HEM, "MyRule")
    assert not ClassFactory.is_exists(ClassType.HEM, "MyRule_")
    cls = ClassFactory.get_cls(ClassType.HEM, "MyRule")
    assert cls is MyRule  # the class, not an instance
    assert cls(level="0.9").level == 0.9
    # an alias replaces the class name: the __name__ is not registered as well
    assert not ClassFactory.is_exists(ClassType.HEM, "MyRule".lower())


def test_register_without_alias_uses_class_name_and_default_type() -> None:
    @ClassFactory.register()
    class Plain:
        pass

    assert ClassFactory.get_cls(ClassType.GENERAL, "Plain") is Plain
    assert ClassFactory.get_cls("general", "Plain") is Plain


def test_register_cls_returns_class_and_accepts_functions() -> None:
    def callback(x: int) -> int:
        return x + 1

    assert ClassFactory.register_cls(callback, ClassType.CALLBACK) is callback
    assert ClassFactory.get_cls(ClassType.CALLBACK, "callback")(1) == 2
    assert ClassFactory.register_cls(callback, ClassType.CALLBACK, alias="inc") is callback
    assert ClassFactory.get_cls(ClassType.CALLBACK, "inc") is callback


def test_register_from_package_registers_public_classes_and_functions() -> None:
    package = types.ModuleType("user_pkg")

    class Public:
        pass

    class _Private:
        pass

    def helper() -> None:
        return None

    package.Public = Public  # type: ignore[attr-defined]
    package._Private = _Private  # type: ignore[attr-defined]
    package.helper = helper  # type: ignore[attr-defined]
    package.CONSTANT = 3  # type: ignore[attr-defined]
    ClassFactory.register_from_package(package, "user_type")
    assert set(ClassFactory.__registry__["user_type"]) == {"Public", "helper"}


def test_custom_type_names_are_accepted() -> None:
    ClassFactory.register_cls(int, "my_type")
    assert ClassFactory.is_exists("my_type")
    assert ClassFactory.get_cls("my_type", "int") is int


def test_is_exists() -> None:
    assert not ClassFactory.is_exists("never_registered")
    assert not ClassFactory.is_exists("never_registered", "X")
    ClassFactory.register_cls(str, "t1")
    assert ClassFactory.is_exists("t1")
    assert ClassFactory.is_exists("t1", "str")
    assert not ClassFactory.is_exists("t1", "bytes")


def test_reregistering_replaces_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    class First:
        pass

    class Second:
        pass

    ClassFactory.register_cls(First, "t2", alias="Rule")
    with caplog.at_level(logging.WARNING, logger="sedna.common.class_factory"):
        ClassFactory.register_cls(First, "t2", alias="Rule")  # same object: silent
        assert not caplog.records
        ClassFactory.register_cls(Second, "t2", alias="Rule")
    assert ClassFactory.get_cls("t2", "Rule") is Second
    assert "'Rule'" in caplog.text
    assert "'t2'" in caplog.text


def test_get_cls_unknown_name_lists_known_names() -> None:
    ClassFactory.register_cls(int, "t3", alias="B")
    ClassFactory.register_cls(str, "t3", alias="A")
    with pytest.raises(ValueError, match="class name 'C'") as info:
        ClassFactory.get_cls("t3", "C")
    message = str(info.value)
    assert "'t3'" in message
    assert "known names: 'A', 'B'" in message


def test_get_cls_unknown_type_lists_known_types() -> None:
    ClassFactory.register_cls(int, "t4")
    with pytest.raises(ValueError, match="class type 'nope'") as info:
        ClassFactory.get_cls("nope", "int")
    assert "'t4'" in str(info.value)


def test_get_cls_without_name_raises() -> None:
    ClassFactory.register_cls(int, "t5")
    with pytest.raises(ValueError, match=r"no class name given for class type 't5'.*'int'"):
        ClassFactory.get_cls("t5")


@pytest.mark.parametrize("bad", ["", None, 3])
def test_invalid_type_name(bad: Any) -> None:
    with pytest.raises(ValueError, match="type_name"):
        ClassFactory.register(bad)
    with pytest.raises(ValueError, match="type_name"):
        ClassFactory.register_cls(int, bad)


@pytest.mark.parametrize("bad", ["", 3])
def test_invalid_alias(bad: Any) -> None:
    with pytest.raises(ValueError, match="alias"):
        ClassFactory.register(ClassType.GENERAL, alias=bad)
    with pytest.raises(ValueError, match="alias"):
        ClassFactory.register_cls(int, ClassType.GENERAL, alias=bad)


def test_object_without_name_needs_alias() -> None:
    with pytest.raises(ValueError, match="alias"):
        ClassFactory.register_cls(object(), ClassType.GENERAL)


def test_builtin_hem_rules_registered_on_import() -> None:
    import sedna.algorithms.hard_example_mining as hem

    for alias, cls in {
        "Threshold": hem.ThresholdFilter,
        "CrossEntropy": hem.CrossEntropyFilter,
        "IBT": hem.IBTFilter,
        "Random": hem.RandomFilter,
        "CloudOnly": hem.CloudOnlyFilter,
        "EdgeOnly": hem.EdgeOnlyFilter,
    }.items():
        assert ClassFactory.get_cls(ClassType.HEM, alias) is cls


def test_user_can_override_a_builtin_alias() -> None:
    """The upstream guide re-registers its own ``Threshold``; that must keep working."""
    import sedna.algorithms.hard_example_mining as hem

    @ClassFactory.register(ClassType.HEM, alias="Threshold")
    class MyThreshold(hem.BaseFilter):
        def __call__(self, infer_result: Any = None) -> bool:
            return True

    assert ClassFactory.get_cls(ClassType.HEM, "Threshold") is MyThreshold
