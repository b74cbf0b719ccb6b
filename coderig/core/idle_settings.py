"""The `coderig:idle` settings: when a stack's model stops paying for its GPUs (every target), and on
ssh/local what it undergoes (`action`) and how often the reaper looks (`periodSeconds`). Office hours are
checked by the reapers' own schedule type (coderig.runtime.idle), one rule for both callers."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from coderig.core.settings_base import KeyProblem as _KeyError
from coderig.core.settings_base import Model as _Model
from coderig.runtime import idle


class OfficeHours(_Model):
    timezone: str = "UTC"
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = Field(
        default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"]
    )
    start: str = "08:00"
    end: str = "19:00"

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", v):
            raise ValueError(f"got {v!r}; expected HH:MM (24h)")
        return v

    @model_validator(mode="after")
    def _window(self) -> OfficeHours:
        """The reaper's own schedule type decides what a usable window is (one rule, two callers:
        this validation and the Lambda / CronJob, which cannot import pydantic)."""
        try:
            idle.OfficeHours.from_dict(self.model_dump())
        except idle.ScheduleError as exc:
            key, _, why = str(exc).partition(": ")
            if key not in type(self).model_fields:
                key, why = "end", str(exc)
            raise _KeyError(key, why) from None
        return self


class IdlePolicy(_Model):
    stopAfterMinutes: int | None = Field(default=None, ge=5, le=7 * 24 * 60)
    officeHours: OfficeHours | None = None
    dryRun: bool = False
    # ssh/local (coderig.targets.compose.idle): what an idle model undergoes; None: sleep on vLLM, stop otherwise
    action: Literal["sleep", "stop"] | None = None
    periodSeconds: int | None = Field(default=None, ge=10, le=3600, description="ssh/local reaper period")

    @model_validator(mode="after")
    def _period_inside_window(self) -> IdlePolicy:
        period = self.periodSeconds or idle.DEFAULT_PERIOD_SECONDS
        if self.enabled and self.stop_after_minutes * 60 < period:
            raise _KeyError(
                "stopAfterMinutes",
                f"got {self.stop_after_minutes}: the idle window is shorter than the reaper's period "
                f"({period} s, idle.periodSeconds); lengthen the window or shorten the period",
            )
        return self

    @property
    def enabled(self) -> bool:
        """A reaper runs when the stack has an idle policy: stopAfterMinutes, officeHours, or both."""
        return self.stopAfterMinutes is not None or self.officeHours is not None

    @property
    def stop_after_minutes(self) -> int:
        """The idle window; with office hours alone, the reapers' default outside the hours."""
        return self.stopAfterMinutes or idle.DEFAULT_STOP_AFTER_MINUTES

    def schedule(self) -> idle.OfficeHours | None:
        """The office hours as the reapers' own type (what they receive through the environment)."""
        return None if self.officeHours is None else idle.OfficeHours.from_dict(self.officeHours.model_dump())
