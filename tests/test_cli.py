"""The console script: each command's module is imported only when it runs, and asking a command for --help
(what a new user does first) imports no deep-learning stack except where the command itself is training."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nerft import cli


@pytest.mark.parametrize("command", ["prepare", "evaluate", "predict", "export", "serve"])
def test_help_does_not_import_torch(command):
    code = (f"import sys\nfrom nerft import cli\ncli.build_parser({command!r})\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'vllm', 'ray') if m in sys.modules)\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"nerft {command} --help imports {out.stdout.strip()}"


def test_an_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["frobnicate"])
    assert done.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


# --- messages: --quiet, --verbose, --debug ------------------------------------------------------------------------

@pytest.fixture
def gold_file(tmp_path):
    from nerft.jsonl import write_jsonl
    from nerft.schema import Document, Entity

    path = tmp_path / "gold.jsonl"
    write_jsonl(path, [Document("a", "张三去北京", [Entity(0, 2, "PER", "张三")])])
    return path


def test_status_goes_to_stderr_and_quiet_keeps_only_problems(gold_file, tmp_path, capsys):
    argv = ["evaluate", "--gold", str(gold_file), "--pred", str(gold_file), "--labels", "ccfbdci"]
    assert cli.main([*argv, "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert "| PER |" in out  # the command's output
    assert err.startswith("nerft evaluate: wrote ") and "metrics.json" in err  # its status, through logging
    for quiet in (["--quiet", *argv], [*argv, "-q"]):  # before or after the command's name
        assert cli.main([*quiet, "--out", str(tmp_path / "b")]) == 0
        assert capsys.readouterr() == ("", "")
    assert (tmp_path / "b" / "metrics.json").is_file()


def test_quiet_keeps_warnings(gold_file, tmp_path, capsys):
    assert cli.main(["--quiet", "evaluate", "--gold", str(gold_file), "--pred", str(gold_file), "--labels",
                     "ccfbdci", "--format", "jsonl"]) == 0
    err = capsys.readouterr().err
    assert err == ("nerft: warning: --format is deprecated and will be removed in the next release; "
                   "use --answer-format\n")


def test_an_error_is_one_line_and_debug_adds_its_traceback(tmp_path, capsys):
    argv = ["evaluate", "--gold", str(tmp_path / "absent.jsonl"), "--pred", str(tmp_path / "absent.jsonl")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"nerft evaluate: error: gold file {tmp_path / 'absent.jsonl'} does not exist"]
    for debug in (["--debug", *argv], [*argv, "--debug"]):
        assert cli.main(debug) == 2
        lines = capsys.readouterr().err.splitlines()
        assert lines[0] == "Traceback (most recent call last):"
        assert "nerft.schema.NerftError: gold file" in lines[-2]
        assert lines[-1] == f"nerft evaluate: error: gold file {tmp_path / 'absent.jsonl'} does not exist"


def test_verbose_shows_debug_messages_and_the_command_leaves_logging_as_it_was(capsys):
    import logging

    seen = []

    def command(args):
        logging.getLogger("nerft.demo").debug("a detail")
        logging.getLogger("nerft.demo").info("a status")
        seen.append(logging.getLogger("nerft").getEffectiveLevel())
        return 0

    parser = cli.build_parser()
    before = (logging.getLogger("nerft").level, list(logging.getLogger("nerft").handlers))
    for flags, expected in ((["-v"], "nerft demo: debug: a detail\nnerft demo: a status\n"),
                            ([], "nerft demo: a status\n"), (["-q"], "")):
        args = parser.parse_args([*flags, "demo"])
        args.func = command
        with cli.command_messages(args):
            assert cli._run(args) == 0
        assert capsys.readouterr().err == expected
    assert seen == [logging.DEBUG, logging.INFO, logging.WARNING]
    assert (logging.getLogger("nerft").level, logging.getLogger("nerft").handlers) == before
