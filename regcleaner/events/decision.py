"""What ``pulled_within`` concludes for one digest: pure, no clock (the caller passes now).

Three answers, never two: a digest with no pull on record counts as "not pulled" only if
recording has covered the whole period; otherwise nobody knows, and retention keeps it
with a reason that says recording began too recently.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime


class PullVerdict(enum.Enum):
    """The three answers."""

    PULLED_WITHIN = "pulled-within"
    """Pulled inside the period: keep."""
    NOT_PULLED = "not-pulled"
    """No pull inside the period, and recording covered all of it: may expire."""
    UNKNOWN_RECORDING_TOO_RECENT = "recording-too-recent"
    """No pull on record inside the period, but recording began inside it: keep."""


@dataclass(frozen=True, slots=True)
class PullDecision:
    """A verdict, the facts it rests on, and the reason a report prints."""

    verdict: PullVerdict
    last_pull: float | None
    covered_since: float | None

    @property
    def keeps(self) -> bool:
        """Whether the tag is kept on this ground."""
        return self.verdict is not PullVerdict.NOT_PULLED

    @property
    def reason(self) -> str:
        """One line for the report, e.g. ``pulled 2026-12-01T10:00:00Z``."""
        if self.verdict is PullVerdict.PULLED_WITHIN:
            return f"pulled {format_time(self.last_pull)}"
        if self.verdict is PullVerdict.NOT_PULLED:
            last = (
                "never pulled"
                if self.last_pull is None
                else (f"last pulled {format_time(self.last_pull)}")
            )
            return f"{last} (recording since {format_time(self.covered_since)})"
        since = (
            "never started"
            if self.covered_since is None
            else (f"began {format_time(self.covered_since)}")
        )
        return f"pull recording {since}: too recent to tell whether it was pulled"


def format_time(moment: float | None) -> str:
    """Seconds since the epoch → ``2026-12-01T10:00:00Z``."""
    if moment is None:
        return "never"
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def last_pull_of_tagged_digest(
    digest: str,
    digest_pull: float | None,
    tag_pull_at: float | None,
    tag_pull_digest: str | None,
    tag_pushed_at: float | None,
) -> float | None:
    """The last pull of ``digest``, which a tag points at now, from both tables.

    ``digest_pull`` is ``PullHistory.last_pull(repository, digest)`` (every event-recorded
    pull, by any tag or by digest). A pull by the tag itself adds to it when it served this
    digest: an event says which digest it served; an access-log line does not, so it counts
    only if it came after the tag was last pushed (the tag pointed here already then).
    """
    candidates = [digest_pull]
    served_here = tag_pull_digest == digest
    logged_after_push = (
        tag_pull_digest is None
        and tag_pushed_at is not None
        and tag_pull_at is not None
        and tag_pull_at >= tag_pushed_at
    )
    if tag_pull_at is not None and (served_here or logged_after_push):
        candidates.append(tag_pull_at)
    known = [moment for moment in candidates if moment is not None]
    return max(known) if known else None


def decide_pulled_within(
    last_pull: float | None, covered_since: float | None, within_s: float, now: float
) -> PullDecision:
    """Whether a digest last pulled at ``last_pull`` (None: no pull on record) was pulled
    within ``within_s`` seconds before ``now``, given recording since ``covered_since``."""
    period_start = now - within_s
    if last_pull is not None and last_pull >= period_start:
        return PullDecision(PullVerdict.PULLED_WITHIN, last_pull, covered_since)
    if covered_since is not None and covered_since <= period_start:
        return PullDecision(PullVerdict.NOT_PULLED, last_pull, covered_since)
    return PullDecision(PullVerdict.UNKNOWN_RECORDING_TOO_RECENT, last_pull, covered_since)
