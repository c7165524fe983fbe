"""One exception type for bad input, so every caller can print one clear line and go on."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """A problem with an input file: the message always names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
