"""What goes wrong in a config: issues at dotted paths, raised together as one ConfigError.

config.md §6: every problem is a ConfigIssue at its dotted path (`agents.list[0].id`); a load
raises all of them at once, in document order.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

EMBEDDED_DEFAULT = "<embedded default>"  # ConfigError.location when the embedded default failed
FILE_LEVEL = "<file>"  # the issue path of a problem with the file as a whole (§6)

PathKey = str | int  # a key of an object, or an index of an array


@attrs.frozen
class ConfigIssue:
    """One problem that keeps the config from loading, at a dotted path (`agents.list[0].id`)."""

    path: str
    message: str

    def line(self) -> str:
        return f"- {self.path}: {self.message}"


class ConfigError(Exception):
    """The config cannot be used; `render()` is what the CLI prints before exiting 78."""

    def __init__(self, location: str, issues: Sequence[ConfigIssue]) -> None:
        self.location = location  # the file path, or EMBEDDED_DEFAULT
        self.issues = tuple(issues)
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join([f"Invalid config at {self.location}:", *(i.line() for i in self.issues)])


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def dotted_path(path: tuple[PathKey, ...]) -> str:
    dotted = ""
    for key in path:
        dotted = f"{dotted}[{key}]" if isinstance(key, int) else join_path(dotted, key)
    return dotted
