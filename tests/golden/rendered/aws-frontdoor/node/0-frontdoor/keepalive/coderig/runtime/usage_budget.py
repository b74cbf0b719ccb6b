"""Per-developer daily token budgets: the decision the gateway asks the relay for before every model
request (stdlib only; ships with the relay's usage modules).

The gateway (nginx) sends each authenticated model request's developer and that developer's
`coderig:developers[].dailyTokens` to the relay's metrics listener (`GET /budget`, an
`auth_request` subrequest on loopback). The relay answers from its usage record, the same counters
`coderig usage` reads, so a budget survives a relay restart exactly as the record does:
- `204`: under budget (or no budget): the request goes on;
- `403` with `x-coderig-budget` (a one-line message naming the limit, the tokens used and the reset
  time) and `retry-after` (seconds to the reset): the gateway answers `429` in the client's error
  shape with that message and `retry-after`.

What counts: input tokens (cached or not) plus output tokens the model server reported for the
developer's requests that finished today. A day is a UTC day, the record's own (`usage_record.utc_day`):
the budget resets at 00:00 UTC. A request is admitted while the day's total is below the limit, so
the requests in flight when it is reached finish (a stream is never cut) and the day can end a
little over the limit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

BUDGET_PATH = "/budget"
DEVELOPER_HEADER = "x-coderig-developer"
LIMIT_HEADER = "x-coderig-daily-tokens"  # the developer's limit, from the gateway's config ("" : none)
MESSAGE_HEADER = "x-coderig-budget"  # the refusal, one line of printable ASCII without quotes
DAY_S = 86400


@dataclass(frozen=True)
class Refusal:
    message: str
    retry_after_s: int  # seconds until the reset (at least 1)
    reset: str  # RFC 3339, UTC


def next_reset(now: float) -> float:
    """The next 00:00 UTC after `now` (epoch seconds)."""
    return (math.floor(now / DAY_S) + 1) * DAY_S


def verdict(developer: str, limit: int | None, used: int, now: float) -> Refusal | None:
    """None when the request may go on; the refusal when `used` (today's tokens) reached `limit`."""
    if limit is None or used < limit:
        return None
    reset = next_reset(now)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reset))
    message = (
        f"daily token budget reached for developer {developer}: {used} of {limit} tokens used today "
        f"(input + output, UTC day); it resets at {stamp} (00:00 UTC)"
    )
    return Refusal(message, max(1, math.ceil(reset - now)), stamp)


def parse_limit(text: str) -> int | None:
    """The limit header: decimal digits -> the limit; empty or anything else -> no budget."""
    text = text.strip()
    return int(text) if text.isdigit() and len(text) <= 18 else None


def answer(refusal: Refusal | None) -> tuple[int, list[tuple[str, str]]]:
    """The listener's status and headers for a verdict."""
    if refusal is None:
        return 204, []
    return 403, [(MESSAGE_HEADER, refusal.message), ("retry-after", str(refusal.retry_after_s))]
