"""Sedna gm service."""
