"""Project error types.

Every mistake a user can make (bad YAML, unknown names, missing data or weights) raises a
``BenchError``.  The CLI prints ``str(err)`` as one line and exits 2; nothing else in the
code base catches these.  Never use ``assert`` for user input (it vanishes under ``-O``).
"""
from __future__ import annotations


class BenchError(Exception):
    """A user-facing error: one line, no traceback, exit code 2."""


class ConfigError(BenchError):
    """An ablation file or override is invalid.

    Rendered as ``file:line: dotted.key: message`` (file/line/key omitted when unknown).
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None):
        self.message, self.file, self.line, self.key = message, file, line, key
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        return f"{where}{self.key + ': ' if self.key else ''}{self.message}"


class DataError(BenchError):
    """A dataset is missing, malformed or cannot be fetched."""


class WeightsError(BenchError):
    """Pretrained weights are missing or fail their checksum."""
