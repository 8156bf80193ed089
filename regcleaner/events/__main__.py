"""``python -m regcleaner.events serve|import-log`` (the same as ``regcleaner events``)."""

from regcleaner.events.command import events_app

events_app(prog_name="regcleaner events")
