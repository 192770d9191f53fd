"""`jobtracker serve` configuration: every flag also has a `JOBTRACKER_*` environment variable.

The variable is the flag's long name in capitals, `-` as `_`, after `JOBTRACKER_`:
`--shutdown-timeout` is `JOBTRACKER_SHUTDOWN_TIMEOUT`, `--access-log/--no-access-log` is
`JOBTRACKER_ACCESS_LOG` (`1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`). A variable sets the
flag's default, so a flag on the command line always wins. `--store` keeps its own
`JOBTRACKER_STORE`, which every command reads. A malformed value is refused naming the variable.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from jobtracker.domain.errors import ConfigError

ENV_PREFIX = "JOBTRACKER_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
#: Flags whose variable is read elsewhere (`store.url.store_url_from`) or that have none.
_NOT_FROM_ENV = frozenset({"help", "store"})


def env_name(action: argparse.Action) -> str:
    """A flag's variable, from its first long option: `--max-events` is JOBTRACKER_MAX_EVENTS."""
    option = next(o for o in action.option_strings if o.startswith("--"))
    return ENV_PREFIX + option.removeprefix("--").upper().replace("-", "_")


def _from_env(action: argparse.Action) -> bool:
    return action.dest not in _NOT_FROM_ENV and any(
        option.startswith("--") for option in action.option_strings
    )


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """`--help` with each flag's default, when it has one and its text does not say it already.

    A flag whose default is None says in its own words what happens without it.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        shown = "%(default)" in text or "(default:" in text
        if action.option_strings and action.default not in (None, argparse.SUPPRESS) and not shown:
            text += " (default: %(default)s)"
        return text.strip()


class HelpFormatter(DefaultsHelpFormatter):
    """`serve --help`: each flag's default (when it has one) and its variable."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action) or ""
        if _from_env(action):
            text += f" [env {env_name(action)}]"
        return text.strip()


def apply_env_defaults(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Make each flag's default the value of its variable, where one is set."""
    # argparse keeps its actions in `_actions`; there is no public list of them.
    for action in filter(_from_env, parser._actions):
        name = env_name(action)
        raw = environ.get(name)
        if raw is not None:
            action.default = _value(action, name, raw)


def _value(action: argparse.Action, name: str, raw: str) -> Any:
    if isinstance(action, argparse.BooleanOptionalAction | argparse._StoreConstAction):
        word = raw.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ConfigError(f"{name}={raw!r}: use 1/true/yes/on or 0/false/no/off")
        on = word in _TRUE
        if isinstance(action, argparse.BooleanOptionalAction):
            return on
        return action.const if on else action.default  # a plain on-switch such as --no-x
    try:
        value = raw if action.type is None else action.type(raw)  # type: ignore[operator]
    except argparse.ArgumentTypeError as exc:  # the type's own words about the value
        raise ConfigError(f"{name}: {exc}") from None
    except (TypeError, ValueError):
        kind = getattr(action.type, "__name__", "value")
        raise ConfigError(f"{name}={raw!r}: not a valid {kind}") from None
    if action.choices is not None and value not in action.choices:
        allowed = ", ".join(map(str, action.choices))
        raise ConfigError(f"{name}={raw!r}: must be one of {allowed}")
    return value
