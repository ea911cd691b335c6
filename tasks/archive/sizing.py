"""Chunk sizing: chunks hold the table lock for about a target time, as the dialer allows.

Like pt-online-schema-change's ``--chunk-time``: each chunk's time per lead is learned (a moving
average), the next chunk is sized to the target, grows gently (at most double) and shrinks at
once, and never below the minimum (a statement's fixed cost makes tiny chunks all overhead).
While no session waited for a table lock, nobody is kept waiting, so chunks may grow past the
target. ``LEARNED`` carries the size a database's last batch ended with to the next batch of this
process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(slots=True)
class ChunkSizer:
    """Sizes chunks so each holds the lock for about ``target`` seconds."""

    target: float
    size: int
    max_size: int
    seconds_per_lead: float | None = field(default=None)
    min_size: int = 1

    def record(self, leads: int, seconds: float, *, nobody_waited: bool = False) -> None:
        """Learn from a chunk that took ``seconds``; ``nobody_waited``: no lock wait meanwhile."""
        if leads == 0:
            return
        sample = seconds / leads
        if self.seconds_per_lead is None:
            self.seconds_per_lead = sample
        else:
            self.seconds_per_lead = 0.7 * self.seconds_per_lead + 0.3 * sample
        wanted = int(self.target / max(self.seconds_per_lead, 1e-7))
        if nobody_waited:
            # No session waited for a table lock while this chunk held one: the dialer is
            # idle, so there is nobody to make way for. Grow past the target time, and fall
            # back to it with the first wait (small statements cost up to 1.6x the work). A
            # batch's short last chunk proves nothing either way: it keeps the size.
            wanted = max(wanted, self.size * 2 if leads >= self.size else self.size)
        # Grow gently (a cold key cache makes the first chunks look slow), shrink at once.
        self.size = max(self.min_size, min(self.max_size, wanted, self.size * 2))


# Which batches learn from each other: the database's URL, the chunk time, the largest chunk.
LearnedKey = tuple[str, timedelta, int]

# The delete chunk size (and time a lead) each database's last batch ended with, per process:
# the next batch on the same database starts there instead of from scratch.
LEARNED: dict[LearnedKey, tuple[int, float | None]] = {}
