"""Sedna lc service."""
