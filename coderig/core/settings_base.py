"""What every stack-settings model shares: the strict base model, the sub-key problem type, and
checks on what was given that run even when another key is invalid (so every problem is reported
at once, not one fix at a time)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

Loc = tuple[str | int, ...]
GIVEN_ERROR = "given_error"  # the error type of a given-check problem
GivenCheck = Callable[[dict[str, Any]], list[tuple[Loc, str, Any]]]


class KeyProblem(ValueError):
    """A model-level problem that belongs to one sub-key (so the message can name it)."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}")


class Model(BaseModel):
    """Strict (unknown keys are errors), frozen. `given_checks` look at the mapping as given and
    report (key path, problem, value given) even when other keys fail their own validation."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)
    given_checks: ClassVar[tuple[GivenCheck, ...]] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _every_problem(cls, data: Any, handler: Callable[[Any], Any]) -> Any:
        if not cls.given_checks or not isinstance(data, dict):
            return handler(data)
        errors: list[Any] = []
        result = None
        try:
            result = handler(data)
        except ValidationError as exc:
            errors = [_rebuilt(e) for e in exc.errors()]
        seen = {tuple(e["loc"]) for e in errors}
        for check in cls.given_checks:
            for loc, message, given in check(data):
                if loc in seen:  # the field's own validation already named this key
                    continue
                err = PydanticCustomError(GIVEN_ERROR, "{message}", {"message": message})
                errors.append(InitErrorDetails(type=err, loc=loc, input=given))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return result


def _rebuilt(e: Any) -> Any:
    """A nested model's given-check problem, passed on through this model's error list."""
    if e["type"] != GIVEN_ERROR:
        return e
    err = PydanticCustomError(GIVEN_ERROR, "{message}", {"message": e["msg"]})
    return InitErrorDetails(type=err, loc=tuple(e["loc"]), input=e["input"])


def cidr(c: str) -> str:
    try:
        ipaddress.ip_network(c, strict=False)
    except ValueError:
        raise ValueError(f"{c!r} is not a CIDR like 203.0.113.0/24") from None
    return c


def is_everyone(c: str) -> bool:
    """0.0.0.0/0 or ::/0: every address on the internet."""
    try:
        return ipaddress.ip_network(c, strict=False).prefixlen == 0
    except ValueError:
        return False
