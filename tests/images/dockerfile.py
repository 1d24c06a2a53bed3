"""A small Dockerfile and ``.dockerignore`` reader for the static image checks.

No container engine runs in the test environment, so the images are checked by reading their
Dockerfiles: this module parses the instructions the checks need (``ARG``, ``FROM``, ``COPY``,
``ADD``, ``USER``, ``ENTRYPOINT``) and reproduces the build context filter of ``.dockerignore``
(Docker's rules: ``*``/``?`` within one path segment, ``**`` across segments, ``!`` re-includes,
the last matching line wins, and a line that matches a folder covers everything below it).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

__all__ = ["DockerIgnore", "Dockerfile", "Instruction", "Stage", "parse_dockerfile"]

_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::?[-+][^}]*)?\}|(\w+))")


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword (upper case), flags (``--from=x``) and arguments."""

    keyword: str
    flags: dict[str, str]
    args: list[str]
    json_form: bool
    line: int


@dataclass
class Stage:
    """One ``FROM`` and the instructions under it."""

    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """The stage's instructions with ``keyword``."""
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    """The parsed file: global ``ARG`` defaults and the stages in order."""

    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        """The stage the image is made of (the last one)."""
        return self.stages[-1]


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations; drop comments and blank lines (as BuildKit does)."""
    lines: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if not current:
            start = number
        if stripped.endswith("\\"):
            current.append(stripped[:-1].strip())
            continue
        current.append(stripped)
        lines.append((start, " ".join(part for part in current if part)))
        current = []
    if current:
        raise ValueError(f"line {start}: the file ends inside a continued instruction")
    return lines


def _parse_instruction(number: int, line: str) -> Instruction:
    keyword, _, rest = line.partition(" ")
    rest = rest.strip()
    flags: dict[str, str] = {}
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        name, _, value = flag[2:].partition("=")
        flags[name] = value
        rest = rest.strip()
    json_form = rest.startswith("[")
    if json_form:
        try:
            parsed = json.loads(rest)
        except ValueError as exc:
            raise ValueError(f"line {number}: {keyword} has a malformed JSON array") from exc
        if not isinstance(parsed, list) or not all(isinstance(a, str) for a in parsed):
            raise ValueError(f"line {number}: {keyword}'s JSON form must be a list of strings")
        args: list[str] = parsed
    elif keyword.upper() in {"RUN", "CMD", "ENTRYPOINT", "LABEL", "ENV"}:
        args = [rest]
    else:
        args = shlex.split(rest)
    return Instruction(keyword.upper(), flags, args, json_form, number)


def substitute(value: str, variables: dict[str, str]) -> str:
    """Expand ``$VAR`` and ``${VAR}`` (with ``:-``/``:+`` forms read as the plain value)."""
    return _VARIABLE.sub(lambda m: variables.get(m.group(1) or m.group(2), ""), value)


def parse_dockerfile(path: Path) -> Dockerfile:
    """Parse ``path``.

    Raises
    ------
    ValueError
        No ``FROM``, an instruction before the first ``FROM`` other than ``ARG``, or a
        malformed JSON form (the message names the line).
    """
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(path.read_text()):
        instruction = _parse_instruction(number, line)
        if instruction.keyword == "FROM":
            args = instruction.args
            base = substitute(args[0], global_args)
            name = args[2] if len(args) == 3 and args[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base=base, name=name))
        elif not stages:
            if instruction.keyword != "ARG":
                raise ValueError(f"{path}:{number}: {instruction.keyword} before the first FROM")
            key, _, default = instruction.args[0].partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(instruction)
    if not stages:
        raise ValueError(f"{path}: no FROM instruction")
    return Dockerfile(path, global_args, stages)


def _segment_regex(pattern: str) -> str:
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            if pattern.startswith("/", i):
                out[-1] = "(?:.*/)?"
                i += 1
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    exclude: bool


class DockerIgnore:
    """The build context filter a ``.dockerignore`` file describes.

    Parameters
    ----------
    text
        The file's contents.
    """

    def __init__(self, text: str) -> None:
        self.rules: list[_Rule] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclude = not line.startswith("!")
            pattern = str(PurePosixPath(line.lstrip("!").strip().lstrip("/")))
            self.rules.append(_Rule(re.compile(_segment_regex(pattern) + r"\Z"), exclude))

    def excluded(self, path: str) -> bool:
        """Whether the context leaves out ``path`` (relative, ``/``-separated)."""
        parts = PurePosixPath(path).parts
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        result = False
        for rule in self.rules:
            # A rule matching the path or one of its parent folders applies to it.
            if any(rule.regex.match(candidate) for candidate in candidates):
                result = rule.exclude
        return result

    def context_files(self, root: Path, source: str) -> list[str]:
        """The files under ``root/source`` (a file or folder) that reach the build context."""
        base = root / source
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        relative = [p.relative_to(root).as_posix() for p in files]
        return [p for p in relative if not self.excluded(p)]
