"""Every command-line flag the README and docs/ name exists (issue 41): a flag written after ``nerft COMMAND`` is
one of that command's options, and a flag quoted on its own (```--min-score```) is an option of some command.
Renaming a flag without its docs fails here, naming the page and line."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

from nerft import cli

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PLACEHOLDERS = {"--section.key"}  # how the docs write "any config key as a flag"
COMMAND = re.compile(r"nerft (" + "|".join(cli.COMMANDS) + r")\b([^`\n|;&)]*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][\w.-]*)")
QUOTED = re.compile(r"`(--[a-z][\w.-]*)")


@cache
def options(command: str) -> frozenset[str]:
    parser = cli.build_parser(command)
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return frozenset(sub._option_string_actions) | frozenset(parser._option_string_actions)


def any_command_has(flag: str) -> bool:
    names = frozenset().union(*(options(c) for c in cli.COMMANDS))
    if flag.endswith("."):  # a section written as a prefix (`--ray.`, meaning every --ray.* key)
        return any(name.startswith(flag) for name in names)
    return flag in names


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, line) with shell continuations (``\\`` at the end) joined."""
    out: list[tuple[int, str]] = []
    start, parts = 0, []
    for number, line in enumerate(text.splitlines(), 1):
        if not parts:
            start = number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        out.append((start, " ".join([*parts, line])))
        parts = []
    return out


def unknown_flags(page: Path) -> list[str]:
    problems = []
    for number, line in logical_lines(page.read_text(encoding="utf-8")):
        for m in COMMAND.finditer(line):
            command = m.group(1)
            for flag in FLAG.findall(m.group(2)):
                if flag not in options(command) and flag not in PLACEHOLDERS:
                    problems.append(f"{page.name}:{number}: nerft {command} has no {flag}")
        for flag in QUOTED.findall(line):
            if flag not in PLACEHOLDERS and not any_command_has(flag):
                problems.append(f"{page.name}:{number}: no command has {flag}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_flag_a_page_names_exists(page):
    assert unknown_flags(page) == []


def test_a_renamed_flag_is_caught(tmp_path):
    """The check itself: a page naming a flag no command has, or one its command lacks, is reported with its line."""
    page = tmp_path / "page.md"
    page.write_text("Run\n\n```\nnerft predict --model RUN \\\n  --no-such-flag 3\n```\n\nthen `--min-score 0.5`, "
                    "`--nothing-like-it` and `nerft train --min-score 1`.\n", encoding="utf-8")
    assert unknown_flags(page) == ["page.md:4: nerft predict has no --no-such-flag",
                                   "page.md:8: nerft train has no --min-score",
                                   "page.md:8: no command has --nothing-like-it"]
