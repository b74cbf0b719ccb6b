"""coderig:developers entries with a daily token budget (coderig.core.developers) and the relay's
pure budget decision (coderig.runtime.usage_budget)."""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest
import yaml
from conftest import ssh_config

from coderig.core.settings import UserError
from coderig.runtime import usage_budget
from coderig.targets import parse_settings


def problems(config: dict[str, object]) -> list[str]:
    with pytest.raises(UserError) as info:
        parse_settings(config)
    return info.value.problems


def test_plain_names_and_budgeted_entries_mix_and_stay_a_list_of_names() -> None:
    s = parse_settings({**ssh_config(), "developers": ["alice", {"name": "bob", "dailyTokens": 2_000_000}, "carol"]})
    assert s.developers == ["alice", "bob", "carol"] and s.developers.budgets == {"bob": 2_000_000}
    assert s.model_dump()["developers"] == ["alice", {"name": "bob", "dailyTokens": 2_000_000}, "carol"]
    plain = parse_settings(ssh_config())
    assert plain.developers == ["alice", "bob"] and plain.developers.budgets == {}
    # a mapping without a budget is a plain name
    assert parse_settings({**ssh_config(), "developers": [{"name": "dave"}]}).developers.budgets == {}


def test_every_bad_entry_is_named_at_once() -> None:
    given = [
        "alice",
        {"name": "Bob", "dailyTokens": 0},
        5,
        {"name": "alice", "dailyTokens": 10},
        {"nme": "x"},
        {"name": "erin", "dailyTokens": "lots"},
    ]
    lines = problems({**ssh_config(), "developers": given})
    assert lines == [
        "coderig:developers[1].dailyTokens: got 0; input should be greater than or equal to 1",
        "coderig:developers[2]: expected a name, or {name: NAME, dailyTokens: N}",
        "coderig:developers[4].name: required but not set",
        "coderig:developers[4].nme: unknown key; allowed here: dailyTokens, name",
        "coderig:developers[5].dailyTokens: got 'lots'; input should be a valid integer, unable to parse string "
        "as an integer",
        "coderig:developers[1].name: got 'Bob': not a valid name; use lowercase letters, digits, '.', '_', '-' "
        "(max 63), e.g. 'bob'",
        "coderig:developers[3].name: got 'alice': listed twice (also developers[0]); each developer gets exactly "
        "one key",
    ], lines


@pytest.mark.parametrize(
    ("target", "model"),
    [
        ({"kind": "external", "endpoint": "https://llm.internal/v1"}, "qwen2.5-coder-0.5b-cpu"),
        ({"kind": "kubernetes", "gpu": {"model": "H200", "count": 8}}, "glm-4.7"),
    ],
)
def test_a_budget_where_nothing_counts_usage_is_refused(target: dict[str, object], model: str) -> None:
    lines = problems({"target": target, "model": {"preset": model}, "developers": [{"name": "a", "dailyTokens": 9}]})
    assert lines == [
        f"coderig:developers[0].dailyTokens: the {target['kind']} target's gateway keeps no usage record to count "
        "a budget against (budgets work on: local, ssh, aws); remove dailyTokens"
    ], lines


NOON = calendar.timegm((2026, 12, 7, 12, 0, 0))


def test_verdict_admits_below_the_limit_and_refuses_at_it_until_utc_midnight() -> None:
    assert usage_budget.verdict("alice", None, 10**9, NOON) is None  # no budget
    assert usage_budget.verdict("alice", 1000, 999, NOON) is None
    refusal = usage_budget.verdict("alice", 1000, 1000, NOON)
    assert refusal is not None
    assert refusal.retry_after_s == 12 * 3600 and refusal.reset == "2026-12-08T00:00:00Z"
    assert refusal.message == (
        "daily token budget reached for developer alice: 1000 of 1000 tokens used today (input + output, UTC day); "
        "it resets at 2026-12-08T00:00:00Z (00:00 UTC)"
    )
    # one second before midnight: retry after 1 s; at midnight the next day's reset
    late = usage_budget.verdict("alice", 1, 5, NOON + 12 * 3600 - 0.5)
    assert late is not None and late.retry_after_s == 1 and late.reset == "2026-12-08T00:00:00Z"
    assert usage_budget.answer(None) == (204, [])
    status, headers = usage_budget.answer(refusal)
    assert status == 403 and dict(headers) == {"x-coderig-budget": refusal.message, "retry-after": "43200"}
    # the message goes into a JSON string and an nginx header as it is: nothing to escape
    assert not set(refusal.message) & set('"\\\r\n$')


@pytest.mark.parametrize(("text", "limit"), [("2000", 2000), (" 7 ", 7), ("", None), ("-1", None), ("1e3", None)])
def test_the_limit_header_is_digits_or_no_budget(text: str, limit: int | None) -> None:
    assert usage_budget.parse_limit(text) == limit


def test_the_readme_example_is_a_valid_developers_list() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme[readme.index("### Daily token budgets") :]
    block = section[section.index("```yaml\n") + 8 : section.index("```\n", section.index("```yaml\n") + 8)]
    given = yaml.safe_load(block)["coderig:developers"]
    s = parse_settings({**ssh_config(), "developers": given})
    assert s.developers == ["alice", "bob"] and s.developers.budgets == {"bob": 2_000_000}
