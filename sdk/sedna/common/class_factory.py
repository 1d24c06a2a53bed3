"""Name-based plug-in registry, compatible with upstream ``sedna.common.class_factory``.

Algorithms (hard example mining rules, aggregations, post-process callbacks ...) are looked up
by the name a resource gives them (``hardExampleMining.name: "IBT"``). A class is registered
under a *type* (a :class:`ClassType` string) and a *name* (its ``alias``, else its
``__name__``)::

    @ClassFactory.register(ClassType.HEM, alias="MyRule")
    class MyRule(BaseFilter):
        ...

    rule = ClassFactory.get_cls(ClassType.HEM, "MyRule")(**params)

:meth:`ClassFactory.get_cls` returns the class itself; the caller instantiates it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from inspect import isclass, isfunction
from typing import Any, ClassVar, Final, TypeVar

__all__ = ["ClassFactory", "ClassType"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")


class ClassType:
    """The registry types upstream defines (plain string constants, as upstream).

    Any other non-empty string is accepted as a type too, as upstream does.
    """

    GENERAL: Final = "general"
    HEM: Final = "hard_example_mining"
    FL_AGG: Final = "aggregation"
    MTL: Final = "multi_task_learening"  # (sic) upstream's spelling, kept for compatibility
    UTD: Final = "unseen_task_detect"
    OF: Final = "optical_flow"
    ALGORITHM: Final = "algorithm"
    DATASET: Final = "data_process"
    CALLBACK: Final = "post_process_callback"
    UTP: Final = "unseen_task_processing"
    KM: Final = "knowledge_management"
    STP: Final = "seen_task_processing"


def _check_type_name(type_name: object) -> str:
    if not isinstance(type_name, str) or not type_name:
        raise ValueError(f"type_name must be a non-empty string, got {type_name!r}")
    return type_name


def _known(names: Any) -> str:
    listed = sorted(str(name) for name in names)
    return ", ".join(repr(name) for name in listed) if listed else "none"


class ClassFactory:
    """The registry: ``{type_name: {name: class_or_function}}``, shared process-wide.

    All methods are classmethods, as upstream; ``__registry__`` is the registry itself.
    Registering another object under a name that is already taken replaces it (upstream's
    effective behaviour, which lets a worker script override a built-in rule) and logs a
    warning; registering the same object again is a no-op.
    """

    __registry__: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def register(
        cls, type_name: str = ClassType.GENERAL, alias: str | None = None
    ) -> Callable[[_T], _T]:
        """Class decorator: register the decorated class (or function).

        Parameters
        ----------
        type_name : str, default ``ClassType.GENERAL``
            Registry type, usually a :class:`ClassType` constant.
        alias : str, optional
            Name to register under; defaults to the class's ``__name__``.

        Returns
        -------
        Callable
            A decorator that registers its argument and returns it unchanged.

        Raises
        ------
        ValueError
            If ``type_name`` or ``alias`` is not a non-empty string.
        """
        _check_type_name(type_name)
        if alias is not None and (not isinstance(alias, str) or not alias):
            raise ValueError(f"alias must be a non-empty string or None, got {alias!r}")

        def wrapper(t_cls: _T) -> _T:
            return cls.register_cls(t_cls, type_name, alias)

        return wrapper

    @classmethod
    def register_cls(
        cls, t_cls: _T, type_name: str = ClassType.GENERAL, alias: str | None = None
    ) -> _T:
        """Register ``t_cls`` under ``type_name`` as ``alias`` (default: its ``__name__``).

        Parameters
        ----------
        t_cls : type or callable
            The class (or function) to register.
        type_name : str, default ``ClassType.GENERAL``
            Registry type.
        alias : str, optional
            Name to register under; defaults to ``t_cls.__name__``.

        Returns
        -------
        type or callable
            ``t_cls`` itself.

        Raises
        ------
        ValueError
            If ``type_name`` or ``alias`` is invalid, or ``alias`` is omitted and ``t_cls`` has
            no ``__name__``.
        """
        _check_type_name(type_name)
        if alias is None:
            name = getattr(t_cls, "__name__", None)
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"cannot register {t_cls!r} under type {type_name!r}: it has no __name__, "
                    "pass alias="
                )
        elif isinstance(alias, str) and alias:
            name = alias
        else:
            raise ValueError(f"alias must be a non-empty string or None, got {alias!r}")
        group = cls.__registry__.setdefault(type_name, {})
        previous = group.get(name)
        if previous is not None and previous is not t_cls:
            _log.warning(
                "ClassFactory: %r under type %r now refers to %r (was %r)",
                name,
                type_name,
                t_cls,
                previous,
            )
        group[name] = t_cls
        return t_cls

    @classmethod
    def register_from_package(cls, package: object, type_name: str = ClassType.GENERAL) -> None:
        """Register every public class and function found in ``package`` under its name.

        Parameters
        ----------
        package : module or object
            Anything ``dir()`` works on; names starting with ``_`` are skipped.
        type_name : str, default ``ClassType.GENERAL``
            Registry type.
        """
        _check_type_name(type_name)
        for name in dir(package):
            if name.startswith("_"):
                continue
            member = getattr(package, name)
            if isclass(member) or isfunction(member):
                cls.register_cls(member, type_name)

    @classmethod
    def is_exists(cls, type_name: str, cls_name: str | None = None) -> bool:
        """Whether ``type_name`` has any registration (``cls_name`` None) or one named ``cls_name``.

        Parameters
        ----------
        type_name : str
            Registry type.
        cls_name : str, optional
            Registered name to look for.

        Returns
        -------
        bool
        """
        group = cls.__registry__.get(type_name)
        if group is None:
            return False
        return cls_name is None or cls_name in group

    @classmethod
    def get_cls(cls, type_name: str, t_cls_name: str | None = None) -> Any:
        """The class (or function) registered under ``type_name`` as ``t_cls_name``.

        Parameters
        ----------
        type_name : str
            Registry type, e.g. ``ClassType.HEM``.
        t_cls_name : str
            Registered name (alias), e.g. ``"IBT"``.

        Returns
        -------
        type or callable
            The registered object, not an instance.

        Raises
        ------
        ValueError
            If the type has no registrations, ``t_cls_name`` is None, or nothing is registered
            under that name; the message lists the known types or names.
        """
        group = cls.__registry__.get(type_name)
        if group is None:
            raise ValueError(
                f"can't find class type {type_name!r} in class registry "
                f"(known types: {_known(cls.__registry__)})"
            )
        if t_cls_name is None:
            raise ValueError(
                f"can't find class: no class name given for class type {type_name!r} "
                f"(known names: {_known(group)})"
            )
        if t_cls_name not in group:
            raise ValueError(
                f"can't find class name {t_cls_name!r} of class type {type_name!r} in class "
                f"registry (known names: {_known(group)})"
            )
        return group[t_cls_name]
