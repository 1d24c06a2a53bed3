"""Hard example mining (HEM) rules, registered under ``ClassType.HEM``.

Upstream-compatible: ``from sedna.algorithms.hard_example_mining import IBTFilter`` and
``ClassFactory.get_cls(ClassType.HEM, "IBT")`` both work once this package is imported.
"""

from sedna.algorithms.hard_example_mining.hard_example_mining import (
    HEM_ENV_PREFIX,
    BaseFilter,
    CloudOnlyFilter,
    CrossEntropyFilter,
    EdgeOnlyFilter,
    IBTFilter,
    RandomFilter,
    ThresholdFilter,
    build_hem_filter,
    get_hem_algorithm_from_config,
)

__all__ = [
    "HEM_ENV_PREFIX",
    "BaseFilter",
    "CloudOnlyFilter",
    "CrossEntropyFilter",
    "EdgeOnlyFilter",
    "IBTFilter",
    "RandomFilter",
    "ThresholdFilter",
    "build_hem_filter",
    "get_hem_algorithm_from_config",
]
