"""The replay command's progress: a bar with events/s on a terminal, silence otherwise."""

from __future__ import annotations

import io

from jobtracker.cli.replay import _progress


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_terminal_gets_a_bar_with_events_per_second() -> None:
    """On a terminal the bar counts events and shows their rate."""
    screen = Terminal()
    advance, close = _progress(1000, screen)
    advance(400)
    advance(600)
    close()
    shown = screen.getvalue()
    assert "1.00k/1.00k" in shown
    assert "ev/s" in shown


def test_pipe_gets_no_bar() -> None:
    """Piped or logged, the command prints only its summary line: no bar noise."""
    pipe = io.StringIO()
    advance, close = _progress(1000, pipe)
    advance(1000)
    close()
    assert pipe.getvalue() == ""
