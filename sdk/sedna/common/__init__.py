"""Helpers shared by the worker SDK (upstream ``sedna.common``).

* :mod:`sedna.common.class_factory`: :class:`~sedna.common.class_factory.ClassType` and the
  name-based plug-in registry :class:`~sedna.common.class_factory.ClassFactory`.
* :mod:`sedna.common.algorithm_params`: reading an algorithm choice injected by the controller
  as ``<ALGORITHM>_NAME`` / ``<ALGORITHM>_PARAMETERS`` environment variables.
"""
