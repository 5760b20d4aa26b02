"""Long work shows progress in a log as well as on a terminal (yolov6_build.progress)."""

import io

from yolov6_build import progress as progress_module
from yolov6_build.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_whole_lines_with_count_rate_and_postfix(monkeypatch):
    monkeypatch.setattr(progress_module, "LOG_INTERVAL_S", 0.0)
    log = io.StringIO()
    bar = progress(total=4, desc="QAT + CWD", unit="it", stream=log)
    for _ in range(4):
        bar.update()
        bar.set_postfix(task="1.250", refresh=False)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert all(line.startswith("QAT + CWD:") for line in lines)
    assert "4/4" in lines[-1] and "task=1.250" in lines[-1] and "it/s" in lines[-1]


def test_a_log_is_not_flooded(monkeypatch):
    log = io.StringIO()
    for _ in progress(range(10_000), desc="calibrate", stream=log):
        pass
    assert len(log.getvalue().splitlines()) <= 3  # start, (at most one interval), end


def test_a_terminal_gets_a_redrawn_bar():
    terminal = Terminal()
    for _ in progress(range(3), desc="epoch 1/12", stream=terminal):
        pass
    assert "\r" in terminal.getvalue() and "epoch 1/12" in terminal.getvalue()


def test_disabled_shows_nothing():
    log = io.StringIO()
    assert list(progress(range(3), desc="quiet", enabled=False, stream=log)) == [0, 1, 2]
    assert log.getvalue() == ""
