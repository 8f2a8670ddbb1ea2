"""nerft.progress: a bar only on a terminal (or when asked), closed when the loop fails; in a log, a line every
tenth of the way instead of a bar per step."""

from __future__ import annotations

import io
import logging

import pytest

from nerft.progress import chosen, progress, track


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_a_line_every_tenth(caplog):
    stream = io.StringIO()  # not a terminal
    with caplog.at_level(logging.INFO, logger="nerft"), progress(100, "train", stream=stream) as meter:
        for step in range(100):
            meter.set_postfix(loss=f"{1 / (step + 1):.2f}")
            meter.update()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 11 and stream.getvalue() == ""  # 0%, 10%, ..., 100%; no bar drawn
    assert lines[0] == "train: 0% (0/100 steps)"
    assert lines[5] == "train: 50% (50/100 steps), loss 0.02"
    assert lines[-1] == "train: 100% (100/100 steps), loss 0.01"


def test_lines_stay_bounded_for_long_loops_and_resume_where_they_were(caplog):
    with caplog.at_level(logging.INFO, logger="nerft"), progress(10_000, "predict", unit="doc", initial=2_500,
                                                                 stream=io.StringIO()) as meter:
        meter.update(7_500)
    assert [r.getMessage() for r in caplog.records] == ["predict: 25% (2500/10000 docs)",
                                                        "predict: 100% (10000/10000 docs)"]


def test_a_bar_on_a_terminal_is_closed_when_the_loop_fails(caplog):
    terminal = Terminal()
    with caplog.at_level(logging.INFO, logger="nerft"), pytest.raises(RuntimeError):
        with progress(10, "train", stream=terminal) as meter:
            meter.update(3)
            raise RuntimeError("a failing step")
    assert meter.closed and meter._bar.disable  # tqdm's state once closed
    assert terminal.getvalue().endswith("\n") and "3/10" in terminal.getvalue()  # the bar ended its line
    assert caplog.records == []  # a bar, not log lines


def test_the_command_chooses_bars_or_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="nerft"):
        with chosen(True), progress(5, "x", stream=io.StringIO()) as forced:
            forced.update(5)
        with chosen(False), progress(5, "x", stream=Terminal()) as off:
            off.update(5)
        assert list(track(range(3), "reading", total=3, show=False)) == [0, 1, 2]
    assert forced._bar is not None and off._bar is None and caplog.records == []


def test_a_stage_logger_does_not_repeat_its_name(caplog):
    with caplog.at_level(logging.INFO, logger="nerft"), progress(2, "train", log=logging.getLogger("nerft.train"),
                                                                 stream=io.StringIO()) as meter:
        meter.update(2)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [("nerft.train", "0% (0/2 steps)"),
                                                                  ("nerft.train", "100% (2/2 steps)")]


def test_a_total_known_only_as_the_loop_goes(caplog):
    terminal = Terminal()
    with progress(None, "train", stream=terminal) as bar:  # a time budget: how many steps fit is not known yet
        bar.update(2)
        bar.set_total(8)  # the pace so far says 8
        bar.update(2)
    assert "4/8" in terminal.getvalue()
    with caplog.at_level(logging.INFO, logger="nerft"), progress(None, "train", stream=io.StringIO()) as meter:
        meter.update(5)
        meter.set_total(10)
        meter.update(5)
    assert [r.getMessage() for r in caplog.records] == ["train: 50% (5/10 steps)", "train: 100% (10/10 steps)"]
