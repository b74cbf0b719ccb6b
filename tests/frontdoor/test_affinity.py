"""The session-affinity key nginx hashes on (coderig.frontdoor.native): one chain of maps over every
agent CLI's session header, first match wins, $request_id when none is sent. The real CLIs run in
tests/frontdoor/test_affinity_integration.py."""

from __future__ import annotations

import re

from coderig.frontdoor.native import AFFINITY_VAR, SESSION_HEADERS, affinity_map


def chain() -> dict[str, tuple[str, str]]:
    """result variable -> (header variable, fallback when the header is empty)"""
    text = "\n".join(affinity_map())
    maps = re.findall(r'map \$http_(\w+) (\$\w+) \{\n    "" (\$\w+);\n    default \$http_\1;\n\}', text)
    assert len(maps) == text.count("map ") == len(SESSION_HEADERS)
    return {var: (header, fallback) for header, var, fallback in maps}


def test_each_clients_header_feeds_the_key_in_order_then_request_id() -> None:
    maps = chain()
    var, seen = AFFINITY_VAR, []
    while var in maps:
        header, var = maps[var]
        seen.append(header)
    assert var == "$request_id"  # a session-less request spreads
    assert seen == [h for _, h in SESSION_HEADERS]
    assert seen == ["x_claude_code_session_id", "session_id", "x_session_id"]  # Claude Code, Codex, opencode
