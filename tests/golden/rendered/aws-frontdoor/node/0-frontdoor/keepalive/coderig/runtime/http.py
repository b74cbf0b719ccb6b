"""The one small HTTP client of the shipped code (reapers, the node's metric publisher, readiness
polls): standard library only."""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def _checked(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    return url


def http_get(url: str, timeout: float = 5.0, context: ssl.SSLContext | None = None) -> str | None:
    """The body of a 200 answer; None when the endpoint does not answer 200 (the signal is missing)."""
    try:
        with urllib.request.urlopen(_checked(url), timeout=timeout, context=context) as resp:  # noqa: S310
            if resp.status != 200:
                return None
            return resp.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError):
        return None


def says_not_ready(body: str) -> bool:
    """A 200 whose JSON body still says the model is not ready (`"ready": false`, status starting/loading)."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    return isinstance(data, dict) and (data.get("ready") is False or data.get("status") in ("starting", "loading"))


def poll_ready(
    url: str,
    timeout: float,
    *,
    interval: float = 5.0,
    context: ssl.SSLContext | None = None,
    alive: Callable[[], bool] = lambda: True,
) -> bool:
    """GET `url` until it answers 200 with a body that does not say "not ready", or until `timeout`
    seconds pass, or `alive()` turns False (the process being waited for died)."""
    _checked(url)
    deadline = time.monotonic() + timeout
    while alive():
        body = http_get(url, timeout=min(10.0, max(1.0, interval)), context=context)
        if body is not None and not says_not_ready(body):
            return True
        if time.monotonic() + interval > deadline:
            return False
        time.sleep(interval)
    return False
