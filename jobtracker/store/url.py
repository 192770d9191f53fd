"""Store URLs: which store, and where; the one reading of `--store` and $JOBTRACKER_STORE."""

from __future__ import annotations

import os
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


def parse_store_url(url: str) -> StoreUrl:
    """Read `sqlite:///rel.db`, `sqlite:////abs.db`, `memory://` or `postgresql://…`.

    Anything else is a `ConfigError` naming what we accept: a typo must not silently create a
    database somewhere unexpected.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ConfigError(f"store URL {url!r} has no scheme; use sqlite:///path.db or memory://")
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
        f"store URL {url!r}: unknown scheme {scheme!r}; "
        "expected sqlite:///path.db, memory:// or postgresql://"
    )


def store_url_from(cli_value: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The store URL in force: `--store`, else $JOBTRACKER_STORE, else ./jobtracker.db."""
    env = os.environ if environ is None else environ
    return cli_value or env.get(STORE_ENV) or DEFAULT_STORE_URL
