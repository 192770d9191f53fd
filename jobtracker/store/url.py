"""Store URLs: which store, and where; the one reading of `--store` and $JOBTRACKER_STORE."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Literal

import attrs

from jobtracker.domain.errors import ConfigError

DEFAULT_STORE_URL = "sqlite:///jobtracker.db"
STORE_ENV = "JOBTRACKER_STORE"


@attrs.frozen
class StoreUrl:
    """A parsed store URL: which kind of store, and where."""

    kind: Literal["sqlite", "memory", "postgresql"]
    location: str = ""


#: The password part of `scheme://user:password@host`, wherever such a URL appears in a text.
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^/@\s]*(?=@)")
MASK = "***"


def masked(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***`: what we print or log."""
    if "://" not in text:  # the usual case, a substring search instead of a regex scan
        return text
    return _PASSWORD.sub(lambda found: found["head"] + MASK, text)


def _shown(url: str) -> str:
    # Without a scheme there is no telling a password from a path: only what follows `@` shows.
    return url if "@" not in url else f"{MASK}@{url.rpartition('@')[2]}"


def parse_store_url(url: str) -> StoreUrl:
    """Read `sqlite:///rel.db`, `sqlite:////abs.db`, `memory://` or `postgresql://…`.

    Anything else is a `ConfigError` naming what we accept: a typo must not silently create a
    database somewhere unexpected.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(
            f"store URL {_shown(url)!r} has no scheme; use sqlite:///path.db or memory://"
        )
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(
                f"store URL {url!r}: write sqlite:///relative.db or sqlite:////absolute/path.db"
            )
        return StoreUrl("sqlite", rest[1:])
    if scheme == "memory":
        if rest:
            raise ConfigError(f"store URL {url!r}: memory:// takes no path")
        return StoreUrl("memory")
    if scheme in ("postgresql", "postgres"):
        return StoreUrl("postgresql", url)
    raise ConfigError(
        f"store URL {masked(url)!r}: unknown scheme {scheme!r}; "
        "expected sqlite:///path.db, memory:// or postgresql://"
    )


def store_url_from(cli_value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The store URL in force: `--store`, else $JOBTRACKER_STORE, else ./jobtracker.db."""
    env = os.environ if environ is None else environ
    return cli_value or env.get(STORE_ENV) or DEFAULT_STORE_URL
