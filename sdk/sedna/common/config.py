"""The worker's view of its environment (upstream ``sedna.common.config``).

The controller describes a worker through environment variables (``WORKER_NAME``,
``NAMESPACE``, ``LC_SERVER``, ``MODEL_URL``, ...). :class:`BaseConfig` exposes them as class
attributes with upstream's names and defaults, and :class:`Context` reads arbitrary
parameters and algorithm choices.

Unlike upstream, which copies ``os.environ`` into class attributes when the module is
imported, every :class:`BaseConfig` attribute reads the environment **when it is accessed**,
so a variable set (or monkeypatched) after import is seen. A value assigned through
``BaseConfig.x = ...``, :meth:`ConfigSerializable.update` or
:meth:`ConfigSerializable.from_json` overrides the environment until
:meth:`BaseConfig.reset` is called.
"""

from __future__ import annotations

import builtins
import copy
import json
import os
import runpy
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from sedna.common.algorithm_params import get_algorithm_from_env

__all__ = ["BaseConfig", "ConfigSerializable", "Context", "load_parameters"]

_T = TypeVar("_T", bound="type[ConfigSerializable]")


def load_parameters(arg: str) -> dict[str, Any]:
    """Parse a ``PARAMETERS`` value (upstream ``_url2dict``).

    Parameters
    ----------
    arg : str
        A path to a ``.yaml``/``.yml``, ``.json`` or ``.py`` file, or a JSON object string.

    Returns
    -------
    dict
        The parsed mapping; for a ``.py`` file, its public module-level names.

    Raises
    ------
    ValueError
        If the value is neither a readable file of those kinds nor a JSON object; the message
        quotes ``PARAMETERS``.
    """
    try:
        if arg.endswith((".yaml", ".yml")):
            raw: Any = yaml.safe_load(Path(arg).read_text(encoding="utf-8"))
        elif arg.endswith(".json"):
            raw = json.loads(Path(arg).read_text(encoding="utf-8"))
        elif arg.endswith(".py"):
            raw = {k: v for k, v in runpy.run_path(arg).items() if not k.startswith("__")}
        else:
            raw = json.loads(arg)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ValueError(
            f"PARAMETERS must be a yaml/json/py file or a JSON object; got {arg!r} ({err})"
        ) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"PARAMETERS must describe a mapping; got {type(raw).__name__} in {arg!r}")
    return raw


class _EnvField:
    """A class attribute backed by an environment variable, read on every access."""

    def __init__(self, env: str, default: str | None) -> None:
        self.env = env
        self.default = default
        self.name = env.lower()

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        cls = owner if owner is not None else type(instance)
        overrides: dict[str, Any] = cls.__dict__.get("_overrides", {})
        if self.name in overrides:
            return overrides[self.name]
        return os.environ.get(self.env, self.default)

    def __set__(self, instance: object, value: Any) -> None:
        setattr(type(instance), self.name, value)


class _ConfigMeta(type):
    """Keeps public class-level assignments in an override table that :meth:`reset` clears."""

    def __setattr__(cls, name: str, value: Any) -> None:
        if name.startswith("_"):
            super().__setattr__(name, value)
        else:
            cls.__dict__["_overrides"][name] = value

    def __getattr__(cls, name: str) -> Any:
        overrides: dict[str, Any] = cls.__dict__.get("_overrides", {})
        if name in overrides:
            return overrides[name]
        raise AttributeError(f"type object {cls.__name__!r} has no attribute {name!r}")

    def __delattr__(cls, name: str) -> None:
        overrides: dict[str, Any] = cls.__dict__.get("_overrides", {})
        if name in overrides:
            del overrides[name]
            return
        super().__delattr__(name)


class ConfigSerializable(metaclass=_ConfigMeta):
    """Serializable config base class (upstream ``ConfigSerializable``)."""

    _overrides: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._overrides = {}

    def __getattr__(self, name: str) -> Any:
        overrides: dict[str, Any] = type(self)._overrides
        if name in overrides:
            return overrides[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def _attrs(cls) -> list[str]:
        names: list[str] = []
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if name.startswith("_") or name in names:
                    continue
                if isinstance(value, (classmethod, staticmethod, property)) or callable(value):
                    continue
                names.append(name)
        names.extend(n for n in cls._overrides if n not in names)
        return names

    def update(self, **kwargs: Any) -> None:
        """Set the known attributes named in ``kwargs``; others are ignored, as upstream."""
        known = self._attrs()
        for name, value in kwargs.items():
            if name in known:
                setattr(type(self), name, value)

    def dict(self) -> builtins.dict[str, Any]:
        """All public attributes with their current values."""
        names = self._attrs() + [n for n in vars(self) if not n.startswith("_")]
        return {name: getattr(self, name) for name in dict.fromkeys(names)}

    def to_json(self) -> builtins.dict[str, Any]:
        """A deep copy of :meth:`dict` (upstream returns a ``Config`` dict subclass)."""
        return copy.deepcopy(self.dict())

    def __getitem__(self, item: str) -> Any:
        return getattr(self, item, None)

    def get(self, item: str, default: Any = "") -> Any:
        """The attribute's value, or ``default`` when it is unset or empty (upstream)."""
        return self[item] or default

    @classmethod
    def from_json(cls: _T, data: Mapping[str, Any] | None) -> _T:
        """Set class attributes from ``data`` (unknown keys become new attributes, as upstream)."""
        if not data:
            return cls
        for name, value in copy.deepcopy(dict(data)).items():
            setattr(cls, name, value)
        return cls


class BaseConfig(ConfigSerializable):
    """The worker's configuration from its environment (upstream ``BaseConfig``).

    A singleton as upstream: ``BaseConfig()`` always returns the same instance. Attributes are
    readable on the class (``BaseConfig.lc_server``) and on the instance.

    Attributes
    ----------
    device_category : str
        ``DEVICE_CATEGORY``, default ``"CPU"``.
    backend_type : str
        ``BACKEND_TYPE``, default ``"TENSORFLOW"``.
    lc_server : str
        ``LC_SERVER``, default ``"http://127.0.0.1:9100"``.
    original_dataset_url, train_dataset_url, test_dataset_url : str or None
        ``ORIGINAL_DATASET_URL``, ``TRAIN_DATASET_URL``, ``TEST_DATASET_URL``.
    data_path_prefix : str
        ``DATA_PATH_PREFIX``, default ``"/home/data"``.
    namespace, worker_name, service_name : str
        ``NAMESPACE``, ``WORKER_NAME``, ``SERVICE_NAME``, default ``""``.
    job_name : str
        ``JOB_NAME``, default ``"sedna"``.
    pretrained_model_url : str
        ``PRETRAINED_MODEL_URL``, default ``"./"``.
    model_url, model_name : str or None
        ``MODEL_URL``, ``MODEL_NAME``.
    log_level : str
        ``LOG_LEVEL``, default ``"INFO"``.
    transmitter : str
        ``TRANSMITTER``, default ``"ws"``.
    agg_data_path : str
        ``AGG_DATA_PATH``, default ``"./"``.
    s3_endpoint_url, access_key_id, secret_access_key : str
        ``S3_ENDPOINT_URL``, ``ACCESS_KEY_ID``, ``SECRET_ACCESS_KEY``, default ``""``.
    parameters : str or None
        ``PARAMETERS``: a yaml/json/py file or a JSON object string; parsed into
        ``parameter`` (a dict) each time ``BaseConfig()`` is called.
    """

    _instance: ClassVar[BaseConfig | None] = None

    device_category = _EnvField("DEVICE_CATEGORY", "CPU")
    backend_type = _EnvField("BACKEND_TYPE", "TENSORFLOW")
    lc_server = _EnvField("LC_SERVER", "http://127.0.0.1:9100")
    original_dataset_url = _EnvField("ORIGINAL_DATASET_URL", None)
    train_dataset_url = _EnvField("TRAIN_DATASET_URL", None)
    test_dataset_url = _EnvField("TEST_DATASET_URL", None)
    data_path_prefix = _EnvField("DATA_PATH_PREFIX", "/home/data")
    namespace = _EnvField("NAMESPACE", "")
    worker_name = _EnvField("WORKER_NAME", "")
    service_name = _EnvField("SERVICE_NAME", "")
    job_name = _EnvField("JOB_NAME", "sedna")
    pretrained_model_url = _EnvField("PRETRAINED_MODEL_URL", "./")
    model_url = _EnvField("MODEL_URL", None)
    model_name = _EnvField("MODEL_NAME", None)
    log_level = _EnvField("LOG_LEVEL", "INFO")
    transmitter = _EnvField("TRANSMITTER", "ws")
    agg_data_path = _EnvField("AGG_DATA_PATH", "./")
    s3_endpoint_url = _EnvField("S3_ENDPOINT_URL", "")
    access_key_id = _EnvField("ACCESS_KEY_ID", "")
    secret_access_key = _EnvField("SECRET_ACCESS_KEY", "")
    parameters = _EnvField("PARAMETERS", None)

    def __new__(cls) -> BaseConfig:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        assert cls._instance is not None
        return cls._instance

    def __init__(self) -> None:
        raw = self.parameters
        if raw:
            self.parameter: dict[str, Any] = load_parameters(str(raw))

    @classmethod
    def reset(cls) -> None:
        """Drop every override so that all attributes follow the environment again."""
        cls._overrides.clear()
        if cls._instance is not None:
            cls._instance.__dict__.pop("parameter", None)


class Context:
    """Parameters and algorithm choices of the worker (upstream ``Context``).

    Attributes
    ----------
    parameters : MutableMapping[str, str]
        Where values are looked up: ``os.environ``, so changes made after import are seen.
    """

    parameters: ClassVar[MutableMapping[str, str]] = os.environ

    @classmethod
    def get_parameters(cls, param: str, default: Any = None) -> Any:
        """The value of ``param`` (or of ``param.upper()``), or ``default`` when unset or empty.

        Parameters
        ----------
        param : str
            Variable name; ``"participants_count"`` also finds ``PARTICIPANTS_COUNT``.
        default : Any, optional
            Returned when neither name has a non-empty value.

        Returns
        -------
        str or Any
            The variable's value (always a string: callers convert it), else ``default``.
        """
        value = cls.parameters.get(param) or cls.parameters.get(str(param).upper())
        return value if value else default

    @classmethod
    def get_algorithm_from_api(cls, algorithm: str, **param: Any) -> dict[str, Any]:
        """The algorithm chosen in the resource, from ``<algorithm>_NAME`` / ``_PARAMETERS``.

        Parameters
        ----------
        algorithm : str
            Variable prefix, e.g. ``"HEM"`` or ``"UTD"``.
        **param
            Overrides merged on top of the parsed parameters.

        Returns
        -------
        dict
            ``{"method": name, "param": {...}}``, or ``{}`` when no name is set.

        Raises
        ------
        ValueError
            If ``<algorithm>_PARAMETERS`` is not a JSON list of ``{"key", "value"}`` objects
            (upstream silently drops all parameters then).
        """
        return get_algorithm_from_env(algorithm, environ=cls.parameters, **param)
