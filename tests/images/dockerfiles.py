"""Just enough of the Dockerfile and .dockerignore formats to check what the images will hold without
building them (there is no Docker engine here): stages, instructions, exec forms, ENV pairs, and
.dockerignore's matching (root-anchored patterns, `**`, `!` exceptions, the last match winning)."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str
    line: int  # where it starts, 1-based

    def exec_form(self) -> list[str] | None:
        """The JSON-array form's words (ENTRYPOINT ["gpuscale"]), or None for the shell form."""
        if not self.args.startswith("["):
            return None
        try:
            words = json.loads(self.args)
        except json.JSONDecodeError:
            return None
        return [str(w) for w in words] if isinstance(words, list) else None

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """COPY/ADD: the leading --flag=value options, then the sources and the destination."""
        words = self.exec_form() or shlex.split(self.args)
        flags: dict[str, str] = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            flags[name] = value
        return flags, words


@dataclass
class Stage:
    base: str
    alias: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """The ENV variables the stage sets (later ones win)."""
        result: dict[str, str] = {}
        for instruction in self.all("ENV"):
            words = shlex.split(instruction.args)
            if words and "=" not in words[0]:  # the legacy `ENV NAME value` form
                result[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                name, _, value = word.partition("=")
                result[name] = value
        return result

    def exposed(self) -> set[int]:
        return {int(word.split("/")[0]) for i in self.all("EXPOSE") for word in i.args.split()}


@dataclass
class Dockerfile:
    path: Path
    stages: list[Stage]
    global_args: dict[str, str]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def aliases(self) -> set[str]:
        return {s.alias for s in self.stages if s.alias}

    def external_bases(self) -> list[str]:
        """The images the stages start from, other than earlier stages of this file."""
        seen: set[str] = set()
        bases = []
        for stage in self.stages:
            if stage.base not in seen:
                bases.append(stage.base)
            if stage.alias:
                seen.add(stage.alias)
        return bases

    def all(self, keyword: str) -> list[Instruction]:
        return [i for stage in self.stages for i in stage.all(keyword)]


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) per instruction: continuations joined, comment lines dropped (also
    between continued lines, as Docker does)."""
    lines: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
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
        lines.append((start, " ".join(current)))
    return lines


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), value)


def parse(path: Path) -> Dockerfile:
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for number, line in logical_lines(path.read_text()):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--platform")]
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(_substitute(words[0], global_args), alias))
        elif not stages:
            if keyword == "ARG":
                name, _, default = args.partition("=")
                global_args[name] = default.strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, args, number))
    if not stages:
        raise ValueError(f"{path}: no FROM")
    return Dockerfile(path, stages, global_args)


@dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        name, _, digest = ref.partition("@")
        last = name.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else None
        repository = name[: len(name) - len(tag) - 1] if tag is not None else name
        return cls(repository, tag, digest or None)


# .dockerignore


@dataclass
class DockerIgnore:
    rules: list[tuple[bool, re.Pattern[str], str]]  # (exception, regex, the pattern as written)

    @classmethod
    def parse(cls, text: str) -> DockerIgnore:
        rules = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            pattern = str(PurePosixPath(line.removeprefix("!").strip().lstrip("/")))
            rules.append((exception, re.compile(_translate(pattern)), pattern))
        return cls(rules)

    @cached_property
    def patterns(self) -> list[str]:
        return [pattern for exception, _, pattern in self.rules if not exception]

    def excluded(self, path: str) -> bool:
        """Whether a path (relative to the build context, / separated) stays out of the context: the
        last rule matching it or one of its parent folders decides."""
        parts = PurePosixPath(path).parts
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        verdict = False
        for exception, regex, _ in self.rules:
            if any(regex.fullmatch(candidate) for candidate in candidates):
                verdict = not exception
        return verdict


def _translate(pattern: str) -> str:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(pattern[i:]))
                break
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("^") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)
