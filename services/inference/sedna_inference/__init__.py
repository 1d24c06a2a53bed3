"""Sedna inference service."""
