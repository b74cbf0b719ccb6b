"""The one user-error type: bad input or a refusal, told as `coderig: <problem>` lines, never a traceback."""

from __future__ import annotations

from collections.abc import Sequence

INVALID = 2  # exit code: invalid input (a config key, a flag, a file)
REFUSED = 1  # exit code: valid input, refused (does not fit, would stop a busy node, not ready)


class UserError(Exception):
    """One or more problems, each a line naming what to fix. `str()` is one line per problem."""

    def __init__(self, problems: str | Sequence[str], exit_code: int = INVALID):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.exit_code = exit_code
        super().__init__("\n".join(self.problems))
