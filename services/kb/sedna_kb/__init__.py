"""Sedna kb service."""
