"""Talking to the registry's HTTP API."""
