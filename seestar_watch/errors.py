"""The one family of errors a user can fix, and the exit codes the CLI maps them to."""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_USER = 1  # bad config, lock held, ledger unreadable, share missing
EXIT_USAGE = 2  # bad command line (click's own code)
EXIT_INTERNAL = 3  # a bug: traceback logged, one line printed

# A share that went away answers with these; they never mean "the file is gone or bad".
SHARE_ERRNOS = frozenset(
    {
        errno.EIO,
        errno.EHOSTDOWN,
        errno.EHOSTUNREACH,
        errno.ETIMEDOUT,
        errno.ENOTCONN,
        errno.ESTALE,
        errno.ENODEV,
        errno.ENETDOWN,
        errno.ENETUNREACH,
        errno.ECONNRESET,
        errno.ECONNABORTED,
    }
)


class UserError(Exception):
    """A problem the user can fix; its message says what, where and how."""

    exit_code = EXIT_USER


class ConfigError(UserError):
    """The config file is missing, unreadable or invalid; lists every problem at once."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) == 1:
            return f"{self.source}: {self.problems[0]}"
        lines = [f"{self.source}: {len(self.problems)} problems"]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)
