"""``regcleaner usage``: which repository holds the space, what only it holds, and what
a clean would free.

``model`` holds the values and the pure rules (what garbage-collect marks), ``ledger``
the per-blob counts spilled to SQLite, ``scan`` the walk over the registry view,
``render``, ``html`` and ``metrics`` the outputs, ``command`` the CLI functions.
"""
