"""Upstream-compatible algorithms selected by name through :mod:`sedna.common.class_factory`."""
