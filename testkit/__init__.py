"""Test kit shared by the tests, the benchmark and the demo.

Real registries, S3, token servers, fault proxies and image pushers. Not shipped in
the wheel; the tests, ``bench/`` and ``demo/`` import it, never each other.
"""
