"""`jobtracker … --help`: every flag of every command says what it does and what it defaults to."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from jobtracker.cli.main import _parser

#: Actions that are not settings of the command: `--help` and `--version`.
NOT_SETTINGS = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("jobtracker",)
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's parser, named by its words, the top level included."""
    yield " ".join(path), parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def help_lines(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each argument's rendered help text (from `--help`), by its first option or its name."""
    formatter = parser._get_formatter()
    shown: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, NOT_SETTINGS):
            continue
        text = formatter._expand_help(action) if action.help else ""
        shown[(action.option_strings or [action.dest])[0]] = " ".join(text.split())
    return shown


ALL = list(commands(_parser()))


def test_the_walk_reaches_every_command() -> None:
    """The commands a user can type are all checked below (a new one joins by itself)."""
    names = {name for name, _ in ALL}
    assert {"jobtracker serve", "jobtracker keys create", "jobtracker keys list",
            "jobtracker jobs show", "jobtracker watch", "jobtracker replay"} <= names


@pytest.mark.parametrize(("name", "parser"), ALL, ids=[name for name, _ in ALL])
def test_every_flag_has_help_showing_its_default(
    name: str, parser: argparse.ArgumentParser
) -> None:
    """A flag without help, or whose help does not show its default (or say it is required),
    fails here; positional arguments need help too."""
    for argument, text in help_lines(parser).items():
        assert text, f"{name} {argument}: no help text"
        action = next(a for a in parser._actions
                      if argument in a.option_strings or argument == a.dest)
        if action.option_strings and not action.required:
            assert "(default: " in text, f"{name} {argument}: the default is not shown: {text}"


def test_serve_flags_show_their_value_and_variable() -> None:
    """`serve --help` shows the value a flag defaults to and the variable that sets it."""
    shown = help_lines(dict(ALL)["jobtracker serve"])
    assert shown["--port"].endswith("(default: 8080) [env JOBTRACKER_PORT]")
    assert "(default: 10.0)" in shown["--shutdown-timeout"]


def test_no_secret_default_is_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The key's variable is named in `--help`, never its value."""
    monkeypatch.setenv("JOBTRACKER_API_KEY", "uc_live_secret")
    for _, parser in commands(_parser()):
        assert "uc_live_secret" not in parser.format_help()
