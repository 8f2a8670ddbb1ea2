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
