"""One meaning per option name across commands (docs/cli.md): every command's --help works, a flag two commands
share is in docs/cli.md's vocabulary and takes the same kind of value in both, renamed flags are gone from --help,
and each old spelling still parses to what the new one gives, with a warning naming the new one."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import pytest

from nerft import cli

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
# command -> (old argv, new argv): the old spelling must parse to the same arguments, with a warning
RENAMED = {
    "prepare": [(["--format", "conll"], ["--input-format", "conll"]), (["--dev", "0.2"], ["--dev-share", "0.2"]),
                (["--test", "0.3"], ["--test-share", "0.3"])],
    "evaluate": [(["--format", "jsonl"], ["--answer-format", "jsonl"])],
    "train": [(["--model", "Qwen/Qwen2.5-0.5B-Instruct"], ["--base", "Qwen/Qwen2.5-0.5B-Instruct"])],
    "predict": [(["--labels", "PER", "ORG"], ["--only-labels", "PER", "ORG"]),
                (["--format", "compact"], ["--answer-format", "compact"]),
                (["--json"], ["--output-format", "nerft"]), (["--engine", "ray"], ["--ray"]),
                (["--engine", "local"], ["--no-ray"])],
    "serve": [(["--max-batch", "4"], ["--batch-size", "4"])],
}


def command_parser(command: str) -> argparse.ArgumentParser:
    parser = cli.build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def shown_options(command: str) -> dict[str, argparse.Action]:
    """The flags ``nerft COMMAND --help`` lists (not the dotted config keys), each with its action."""
    return {flag: action for action in command_parser(command)._actions if action.help != argparse.SUPPRESS
            for flag in action.option_strings if "." not in flag}


def kind(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "switch"
    return "list" if action.nargs in ("+", "*") or isinstance(action.nargs, int) else "value"


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("usage: nerft " + command)


def test_a_shared_flag_has_one_meaning():
    documented = set(re.findall(r"`(--?[a-z][a-z-]*)`", DOCS.read_text(encoding="utf-8")))
    kinds: dict[str, dict[str, str]] = {}
    for command in cli.COMMANDS:
        for flag, action in shown_options(command).items():
            kinds.setdefault(flag, {})[command] = kind(action)
    shared = {flag: by_command for flag, by_command in kinds.items() if len(by_command) > 1}
    assert {"--model", "--base", "--labels", "--batch-size", "--backend", "--quiet"} <= set(shared)
    undocumented = sorted(set(shared) - documented - {"-h", "--help", "--no-progress"} - {
        f for f in shared if f.startswith("--no-") and "--" + f[5:] in documented})
    assert not undocumented, f"flags shared by commands but not in docs/cli.md's vocabulary: {undocumented}"
    mixed = {flag: by_command for flag, by_command in shared.items() if len(set(by_command.values())) > 1}
    assert not mixed, f"a flag that takes a value in one command and not in another: {mixed}"


@pytest.mark.parametrize("command", list(RENAMED))
def test_renamed_flags_are_gone_from_help(command):
    shown = shown_options(command)
    for old, new in RENAMED[command]:
        assert old[0] not in shown and new[0] in shown


@pytest.mark.parametrize(("command", "old", "new"),
                         [(c, old, new) for c, pairs in RENAMED.items() for old, new in pairs])
def test_an_old_spelling_parses_as_the_new_one_with_a_warning(command, old, new, caplog):
    parser = command_parser(command)
    required = {"tune": ["--dev", "d", "--out", "o"]}.get(command, [])
    with caplog.at_level(logging.WARNING, logger="nerft"):
        as_new = vars(parser.parse_args([*required, *new]))
        assert caplog.records == []
        as_old = vars(parser.parse_args([*required, *old]))
    assert {k: v for k, v in as_old.items() if not k.startswith("_deprecated_")} == as_new
    assert [r.getMessage() for r in caplog.records] == [
        f"{' '.join(old[:1] if old[0] != '--engine' else old)} is deprecated and will be removed in the next "
        f"release; use {' '.join(new[:1] if new[0] != '--output-format' else new)}"]


def test_the_global_flags_work_before_and_after_the_command():
    parser = cli.build_parser("export")
    before = parser.parse_args(["--quiet", "--no-progress", "export", "--model", "m", "--output", "o"])
    after = parser.parse_args(["export", "--model", "m", "--output", "o", "--quiet", "--no-progress"])
    plain = parser.parse_args(["export", "--model", "m", "--output", "o"])
    assert (before.quiet, before.progress) == (after.quiet, after.progress) == (True, False)
    assert not hasattr(plain, "quiet") and not hasattr(plain, "progress")  # unset: the defaults apply
