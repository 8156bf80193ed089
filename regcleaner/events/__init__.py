"""Pull recording: the registry's notifications (and its access logs) → last pull times.

- ``envelope``: the notification envelope, parsed into manifest pulls (pure).
- ``accesslog``: the registry's access and request logs, parsed into manifest pulls (pure).
- ``store``: the SQLite file the pulls are kept in, and ``PullHistory``, its read side.
- ``decision``: what retention's ``pulled_within`` concludes for one digest (pure).
- ``server``: ``regcleaner events serve``, the aiohttp receiver with group commit.
- ``command``: the typer sub-app (``serve``, ``import-log``).

Nothing here is imported when the CLI starts; ``command`` imports aiohttp inside the
commands only.
"""
