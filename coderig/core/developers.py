"""`coderig:developers`: who gets a key, and optionally a daily token budget.

Each entry is a name (`alice`) or a mapping with the name and a budget
(`{name: bob, dailyTokens: 2000000}`). Everywhere else the list is what it always was, the names in
order (`Roster` is a `list[str]`); the budgets ride along as `Roster.budgets`. A budget counts the
input (cached or not) plus output tokens the model server reported for that developer's requests in
one UTC day; the gateway refuses further model requests with 429 until 00:00 UTC
(coderig.frontdoor.budget, coderig.runtime.usage_budget).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BeforeValidator, Field, GetCoreSchemaHandler
from pydantic_core import core_schema

from coderig.core.settings_base import Loc, Model

ENTRY_HINT = "a name, or {name: NAME, dailyTokens: N}"


class DeveloperEntry(Model):
    name: str = Field(description="the developer's name (one key each)")
    dailyTokens: int | None = Field(
        default=None, ge=1, description="tokens (input + output) a UTC day; over it the gateway answers 429"
    )


def _entry(value: Any) -> Any:
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict | DeveloperEntry):
        return value
    raise ValueError(f"expected {ENTRY_HINT}")


class Roster(list[str]):
    """The developers' names, in the order given, with their daily budgets (name -> tokens)."""

    entry_model: ClassVar[type[Model]] = DeveloperEntry  # what one entry is validated as

    def __init__(self, names: Any = (), budgets: dict[str, int] | None = None) -> None:
        super().__init__(names)
        self.budgets: dict[str, int] = dict(budgets or {})

    @classmethod
    def from_entries(cls, entries: list[DeveloperEntry]) -> Roster:
        budgets = {e.name: e.dailyTokens for e in entries if e.dailyTokens is not None}
        return cls([e.name for e in entries], budgets)

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        entries = handler.generate_schema(list[Annotated[DeveloperEntry, BeforeValidator(_entry)]])
        return core_schema.no_info_after_validator_function(
            cls.from_entries,
            entries,
            serialization=core_schema.plain_serializer_function_ser_schema(cls.entries),
        )

    def entries(self) -> list[Any]:
        """As written in the stack file: a plain name unless a budget is set."""
        return [{"name": n, "dailyTokens": self.budgets[n]} if n in self.budgets else n for n in self]


def entry_names(given: Any) -> list[tuple[Loc, Any]]:
    """(key path of the name, name) for each entry of a `developers` list as given; entries of another
    type are left to the field's own validation."""
    if not isinstance(given, list):
        return []
    out: list[tuple[Loc, Any]] = []
    for i, entry in enumerate(given):
        if isinstance(entry, str):
            out.append((("developers", i), entry))
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            out.append((("developers", i, "name"), entry["name"]))
    return out
