"""One exception type for bad input, so every caller can print one clear line and go on."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """A problem with an input file: the message always names the file and the problem, and the
    element (``obs/cell_type``, ``raw.X``...) when one part of the file is at fault:
    ``<file>: <element>: <what is wrong>``."""

    def __init__(self, path: str | Path, problem: str, element: str | None = None) -> None:
        self.path = str(path)
        self.element = element
        self.problem = f"{element}: {problem}" if element else problem
        super().__init__(f"{self.path}: {self.problem}")
