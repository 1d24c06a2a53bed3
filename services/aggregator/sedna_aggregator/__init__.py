"""Sedna aggregator service."""
