"""`coderig:logs`: how much of each service's log a compose node (`local`, `ssh`, `aws`, an `external`
front door) keeps on the host.

Every service logs to its container's stdout/stderr (the gateway's access and error logs included), and
Docker's `json-file` driver keeps them on the host under /var/lib/docker/containers/, rotated at
`maxSizeMb` with `maxFiles` files per service: `docker compose -p coderig logs SERVICE` reads them.
Without `max-size`, json-file never rotates (Docker's documented default is -1, unlimited).
"""

from __future__ import annotations

from pydantic import Field

from coderig.core.settings_base import Model


class LogSettings(Model):
    maxSizeMb: int = Field(default=100, ge=1, le=10_240, description="rotate a service's log at this size")
    maxFiles: int = Field(default=5, ge=1, le=100, description="log files kept per service")

    def compose_logging(self) -> dict[str, object]:
        """The compose `logging:` block of every service."""
        return {"driver": "json-file", "options": {"max-size": f"{self.maxSizeMb}m", "max-file": str(self.maxFiles)}}
