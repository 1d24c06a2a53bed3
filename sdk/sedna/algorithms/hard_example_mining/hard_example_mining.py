"""Hard example mining (HEM) rules, compatible with upstream Sedna.

Each rule is a callable ``rule(infer_result) -> bool`` (True: a hard example, to be sent to the
cloud / kept for retraining) registered under :attr:`ClassType.HEM
<sedna.common.class_factory.ClassType.HEM>`:

* ``"Threshold"`` (:class:`ThresholdFilter`, ``threshold=0.5``): boxes with the score at
  index 4; hard iff the mean score is below ``threshold``.
* ``"CrossEntropy"`` (:class:`CrossEntropyFilter`, ``threshold_cross_entropy=0.5``): class
  probabilities ``[p1, ..., pN]``; hard iff ``1 + sum(p ln p) / ln N < threshold_cross_entropy``.
* ``"IBT"`` (:class:`IBTFilter`, ``threshold_img=0.5``, ``threshold_box=0.5``): boxes
  ``[xmin, ymin, xmax, ymax, score, label]``; hard iff the share of boxes with
  ``score <= threshold_box`` is at least ``1 - threshold_img``.
* ``"Random"`` (:class:`RandomFilter`, ``random_ratio=0.3``): any input; hard with probability
  ``random_ratio``.
* ``"CloudOnly"`` / ``"EdgeOnly"`` (:class:`CloudOnlyFilter` / :class:`EdgeOnlyFilter`): any
  input; always / never hard.

Parameters may be given as numbers or as the strings the controller injects
(``HEM_PARAMETERS``); they are converted with ``float()`` as upstream and must lie in [0, 1].

Input handling follows upstream: an empty or missing result is not hard; a result upstream
treats as invalid (a box with fewer than 5 values, a score or probability outside [0, 1]) is
not hard either, and is logged; pass ``strict=True`` (or ``"true"``) to any rule to get a
``ValueError`` instead. Inputs upstream would crash on (not a list of boxes, not a 1-D
probability vector, non-numeric values) raise a ``ValueError`` naming ``infer_result``.
"""

from __future__ import annotations

import abc
import logging
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from sedna.common.algorithm_params import get_algorithm_from_env
from sedna.common.class_factory import ClassFactory, ClassType

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

_log = logging.getLogger(__name__)

HEM_ENV_PREFIX = "HEM"
"""Prefix of the variables the controller injects: ``HEM_NAME`` and ``HEM_PARAMETERS``."""

#: A rule parameter: a number, or the string form the controller injects.
ParamValue = float | int | str

_NOT_A_LIST = (str, bytes, bytearray, Mapping)


class _InvalidInputError(Exception):
    """An input upstream treats as "not hard" instead of failing."""


def _param_unit(value: object, name: str) -> float:
    """``float(value)``, which must lie in [0, 1]; ValueError naming ``name`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return number


def _param_bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"true", "1", "yes", "on"}:
            return True
        if text in {"false", "0", "no", "off", ""}:
            return False
    raise ValueError(f"{name} must be a boolean ('true' or 'false'), got {value!r}")


def _param_seed(value: object, name: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{name} must be an integer, got {value!r}")


def _number(value: object, name: str) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def _rows(infer_result: Any, what: str) -> list[Any]:
    """The items of a list-like ``infer_result`` (None is empty)."""
    if infer_result is None:
        return []
    if isinstance(infer_result, _NOT_A_LIST):
        raise ValueError(f"infer_result must be {what}, got {type(infer_result).__name__}")
    try:
        return list(infer_result)
    except TypeError:
        raise ValueError(
            f"infer_result must be {what}, got {type(infer_result).__name__}"
        ) from None


def _box_scores(infer_result: Any) -> list[float]:
    """The score (index 4) of every box; raises :class:`_InvalidInputError` for a short box."""
    what = "a list of boxes [xmin, ymin, xmax, ymax, score, ...]"
    scores: list[float] = []
    for index, box in enumerate(_rows(infer_result, what)):
        if isinstance(box, _NOT_A_LIST) or not (
            hasattr(box, "__len__") and hasattr(box, "__getitem__")
        ):
            raise ValueError(
                f"infer_result must be {what}; infer_result[{index}] is {box!r}, not a box"
            )
        if len(box) <= 4:
            raise _InvalidInputError(
                f"infer_result[{index}] has {len(box)} values; a box needs at least 5 "
                "([xmin, ymin, xmax, ymax, score, ...])"
            )
        scores.append(_number(box[4], f"infer_result[{index}][4] (the box score)"))
    return scores


def _check_unit_scores(scores: list[float], label: str) -> None:
    for index, score in enumerate(scores):
        if not 0.0 <= score <= 1.0:
            raise _InvalidInputError(f"{label.format(index)} = {score!r} is outside [0, 1]")


class BaseFilter(metaclass=abc.ABCMeta):  # noqa: B024 (ABCMeta as upstream; __call__ is not abstract there either)
    """Base of the hard example mining rules (upstream ``BaseFilter``).

    Parameters
    ----------
    strict : bool or str, default False
        Raise ``ValueError`` for inputs upstream silently treats as "not hard" (boxes with
        fewer than 5 values, scores or probabilities outside [0, 1]) instead of logging them
        and returning False.
    **kwargs
        Accepted and ignored, as upstream (so one parameter list can serve several rules);
        unknown names are logged.
    """

    def __init__(self, *, strict: bool | str = False, **kwargs: Any) -> None:
        self.strict = _param_bool(strict, "strict")
        self._warned = False
        if kwargs:
            _log.warning(
                "%s ignores unknown parameter(s) %s", type(self).__name__, ", ".join(sorted(kwargs))
            )

    def __call__(self, infer_result: Any = None) -> bool:
        """Judge whether the sample is hard.

        Parameters
        ----------
        infer_result : array_like, optional
            The prediction result, in the shape the rule documents.

        Returns
        -------
        bool
            True means a hard sample, False means not.
        """
        raise NotImplementedError

    @classmethod
    def data_check(cls, data: Any) -> bool:
        """Whether ``float(data)`` lies in [0, 1] (upstream helper)."""
        return 0.0 <= float(data) <= 1.0

    def _reject(self, message: str) -> bool:
        """Handle an input upstream treats as not hard: raise when strict, else log and False."""
        if self.strict:
            raise ValueError(message)
        if self._warned:
            _log.debug("%s: %s; treated as not hard", type(self).__name__, message)
        else:
            self._warned = True
            _log.warning(
                "%s: %s; treated as not hard, as upstream (pass strict=True to raise; "
                "further cases are logged at DEBUG)",
                type(self).__name__,
                message,
            )
        return False


@ClassFactory.register(ClassType.HEM, alias="Threshold")
class ThresholdFilter(BaseFilter):
    """Object detection rule ``Threshold``: hard iff the mean box score is below ``threshold``.

    Parameters
    ----------
    threshold : float or str, default 0.5
        Hard coefficient threshold, in [0, 1].
    **kwargs
        See :class:`BaseFilter` (``strict``).

    Raises
    ------
    ValueError
        If ``threshold`` is not a number in [0, 1].
    """

    def __init__(self, threshold: ParamValue = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = _param_unit(threshold, "threshold")

    def __call__(self, infer_result: Any = None) -> bool:
        """Judge whether the image is hard.

        Parameters
        ----------
        infer_result : array_like, optional
            Boxes ``[bbox1, bbox2, ...]`` with the score at index 4, e.g.
            ``[xmin, ymin, xmax, ymax, score, label]``. Scores are not range-checked (upstream).

        Returns
        -------
        bool
            ``mean(score) < threshold``; False for no boxes.
        """
        try:
            scores = _box_scores(infer_result)
        except _InvalidInputError as err:
            return self._reject(str(err))
        if not scores:
            return False
        image_score = 0.0
        for score in scores:
            image_score += score
        return image_score / len(scores) < self.threshold


@ClassFactory.register(ClassType.HEM, alias="CrossEntropy")
class CrossEntropyFilter(BaseFilter):
    """Classification rule ``CrossEntropy``: hard iff the normalised confidence is low.

    ``confidence = 1 + sum(p * ln p) / ln N`` (1 minus the entropy normalised by its maximum
    ``ln N``, with ``0 * ln 0 = 0``); hard iff ``confidence < threshold_cross_entropy``.

    Parameters
    ----------
    threshold_cross_entropy : float or str, default 0.5
        Confidence threshold, in [0, 1].
    **kwargs
        See :class:`BaseFilter` (``strict``).

    Raises
    ------
    ValueError
        If ``threshold_cross_entropy`` is not a number in [0, 1].
    """

    def __init__(self, threshold_cross_entropy: ParamValue = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold_cross_entropy = _param_unit(
            threshold_cross_entropy, "threshold_cross_entropy"
        )

    def __call__(self, infer_result: Any = None) -> bool:
        """Judge whether the sample is hard.

        Parameters
        ----------
        infer_result : array_like, optional
            Class probabilities ``[p1, ..., pN]`` with every ``p`` in [0, 1] and ``N >= 2``.

        Returns
        -------
        bool
            True for a hard sample; False for an empty input, or (unless ``strict``) for a
            probability outside [0, 1].

        Raises
        ------
        ValueError
            If ``infer_result`` is not a 1-D numeric vector or has a single class.
        """
        what = "a 1-D list of class probabilities [p1, ..., pN]"
        if infer_result is None:
            return False
        if isinstance(infer_result, _NOT_A_LIST):
            raise ValueError(f"infer_result must be {what}, got {type(infer_result).__name__}")
        try:
            array = np.asarray(infer_result, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"infer_result must be {what}, got {infer_result!r}") from None
        if array.size == 0 and array.ndim <= 1:
            return False
        if array.ndim != 1:
            raise ValueError(f"infer_result must be {what}, got an array of shape {array.shape}")
        probabilities: list[float] = array.tolist()
        try:
            _check_unit_scores(probabilities, "infer_result[{}] (a class probability)")
        except _InvalidInputError as err:
            return self._reject(str(err))
        count = len(probabilities)
        if count < 2:
            raise ValueError(
                f"infer_result must hold at least 2 class probabilities (the confidence divides "
                f"by ln N), got {count}"
            )
        log_sum = 0.0
        for probability in probabilities:
            if probability > 0.0:
                log_sum += probability * math.log(probability)
        confidence_score = 1 + 1.0 * log_sum / math.log(count)
        return confidence_score < self.threshold_cross_entropy


@ClassFactory.register(ClassType.HEM, alias="IBT")
class IBTFilter(BaseFilter):
    """Object detection rule ``IBT`` (image-box thresholds).

    ``hard coefficient = number(boxes with score <= threshold_box) / number(boxes)``; hard iff
    ``hard coefficient >= 1 - threshold_img``.

    Parameters
    ----------
    threshold_img : float or str, default 0.5
        Image threshold, in [0, 1].
    threshold_box : float or str, default 0.5
        Box score threshold, in [0, 1].
    **kwargs
        See :class:`BaseFilter` (``strict``).

    Raises
    ------
    ValueError
        If a threshold is not a number in [0, 1].
    """

    def __init__(
        self, threshold_img: ParamValue = 0.5, threshold_box: ParamValue = 0.5, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.threshold_box = _param_unit(threshold_box, "threshold_box")
        self.threshold_img = _param_unit(threshold_img, "threshold_img")

    def __call__(self, infer_result: Any = None) -> bool:
        """Judge whether the image is hard.

        Parameters
        ----------
        infer_result : array_like, optional
            Boxes ``[bbox1, bbox2, ...]``, ``bbox = [xmin, ymin, xmax, ymax, score, label]``,
            scores in [0, 1].

        Returns
        -------
        bool
            True for a hard image; False for no boxes, or (unless ``strict``) for a short box
            or a score outside [0, 1].
        """
        try:
            scores = _box_scores(infer_result)
            _check_unit_scores(scores, "infer_result[{}][4] (the box score)")
        except _InvalidInputError as err:
            return self._reject(str(err))
        if not scores:
            return False
        low = sum(1 for score in scores if score <= self.threshold_box)
        return low / len(scores) >= (1 - self.threshold_img)


@ClassFactory.register(ClassType.HEM, alias="Random")
class RandomFilter(BaseFilter):
    """Rule ``Random``: hard iff ``uniform(0, 1) < random_ratio``, whatever the input.

    Parameters
    ----------
    random_ratio : float or str, default 0.3
        Probability of calling a sample hard, in [0, 1].
    seed : int or str, optional
        Seed of a private generator; by default the module-level :mod:`random` generator is
        used (as upstream), so ``random.seed()`` applies.
    **kwargs
        See :class:`BaseFilter`.

    Raises
    ------
    ValueError
        If ``random_ratio`` is not a number in [0, 1] or ``seed`` is not an integer.
    """

    def __init__(
        self, random_ratio: ParamValue = 0.3, seed: int | str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.random_ratio = _param_unit(random_ratio, "random_ratio")
        parsed_seed = _param_seed(seed, "seed")
        self._uniform: Callable[[float, float], float] = (
            random.uniform if parsed_seed is None else random.Random(parsed_seed).uniform
        )

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        """Draw; the arguments are ignored.

        Returns
        -------
        bool
            True (hard) with probability ``random_ratio``.
        """
        return self._uniform(0, 1) < self.random_ratio


@ClassFactory.register(ClassType.HEM, alias="CloudOnly")
class CloudOnlyFilter(BaseFilter):
    """Rule ``CloudOnly``: every sample is hard (always infer in the cloud)."""

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        """Return True, whatever the arguments."""
        return True


@ClassFactory.register(ClassType.HEM, alias="EdgeOnly")
class EdgeOnlyFilter(BaseFilter):
    """Rule ``EdgeOnly``: no sample is hard (always infer at the edge)."""

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        """Return False, whatever the arguments."""
        return False


def get_hem_algorithm_from_config(**param: Any) -> dict[str, Any]:
    """The HEM choice from ``HEM_NAME`` / ``HEM_PARAMETERS`` (as upstream's classmethod).

    Parameters
    ----------
    **param
        Overrides merged on top of the parameters from ``HEM_PARAMETERS``.

    Returns
    -------
    dict
        ``{"method": name, "param": {...}}`` (values as injected, usually strings), or ``{}``
        when ``HEM_NAME`` is unset.

    Raises
    ------
    ValueError
        If ``HEM_PARAMETERS`` is not a JSON list of ``{"key", "value"}`` objects.
    """
    return get_algorithm_from_env(HEM_ENV_PREFIX, **param)


def build_hem_filter(
    hard_example_mining: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> Callable[..., bool] | None:
    """Instantiate the HEM rule the way upstream jobs do.

    Parameters
    ----------
    hard_example_mining : Mapping, optional
        ``{"method": alias, "param": {...}}`` as given to ``JointInference``; ``method``
        defaults to ``"IBT"`` and ``param`` to ``{}``, as upstream. When None, the choice is
        read from ``HEM_NAME`` / ``HEM_PARAMETERS``.
    environ : Mapping[str, str], optional
        Where to read those variables; defaults to ``os.environ``.

    Returns
    -------
    Callable or None
        The rule instance, or None when no rule is configured (empty mapping, or
        ``HEM_NAME`` unset).

    Raises
    ------
    ValueError
        If the rule is unknown (the message lists the registered names), its parameters are
        invalid, or ``HEM_PARAMETERS`` is malformed; it names the variable or key and value.
    """
    from_env = hard_example_mining is None
    config = (
        get_algorithm_from_env(HEM_ENV_PREFIX, environ)
        if hard_example_mining is None
        else hard_example_mining
    )
    if not config:
        return None
    method = config.get("method", "IBT")
    params = config.get("param") or {}
    method_src = f"{HEM_ENV_PREFIX}_NAME" if from_env else "hard_example_mining['method']"
    params_src = f"{HEM_ENV_PREFIX}_PARAMETERS" if from_env else "hard_example_mining['param']"
    if not isinstance(params, Mapping):
        raise ValueError(f"{params_src} must be a mapping of parameters, got {params!r}")
    try:
        rule_cls = ClassFactory.get_cls(ClassType.HEM, method)
    except ValueError as err:
        raise ValueError(
            f"{method_src}={method!r} is not a hard example mining rule: {err}"
        ) from None
    try:
        rule = rule_cls(**params)
    except ValueError as err:
        raise ValueError(f"{params_src} {dict(params)!r} for {method!r}: {err}") from None
    if not callable(rule):
        raise ValueError(f"{method_src}={method!r}: {rule_cls!r} does not build a callable rule")
    return rule  # type: ignore[no-any-return]
