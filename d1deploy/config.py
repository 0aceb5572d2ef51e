"""Settings: one `resolve()` turns flags, environment and config files into `Settings`.

It owns the precedence rule, the typed `Flags` the command line gives, the checks on
combinations of settings (`Settings.require_database`, `is_fleet`, ...), the source of
every value (shown by `--verbose`), and keeping the API token out of every repr,
description and error. The files are read by `projectconfig` (d1deploy.toml,
[tool.d1deploy]), `wrangler_config` (wrangler.toml/.json/.jsonc) and `configfile`
(TOML, JSON, JSONC); the defaults live in `defaults`. Longer than 500 lines because the
precedence table below, `Settings` and the one `resolve()` that applies it read as one.

Each setting, in precedence order (leftmost wins; "toml" is d1deploy.toml or
[tool.d1deploy] in pyproject.toml, "wrangler" the wrangler config's D1 keys):

    api_token           env CLOUDFLARE_API_TOKEN only (never a flag, never a file)
    account_id          --account-id > CLOUDFLARE_ACCOUNT_ID > toml > wrangler
    api_base_url        CLOUDFLARE_API_BASE_URL > https://api.cloudflare.com/client/v4
    databases           --database... > D1DEPLOY_DATABASE (a,b) > toml `database`
                        > wrangler d1_databases entry (by binding/database_name, or the only one)
    databases_matching  --databases-matching
    local_path          only with --local: --local PATH > toml > .d1deploy/local.sqlite
    migrations_dir      --migrations-dir > toml > wrangler entry > ./migrations
    migrations_table    --migrations-table > toml > wrangler entry > d1_migrations
    migrations_pattern  toml > wrangler entry > `*.sql` (written as wrangler's: it starts with
                        the migrations folder, `migrations/*/migration.sql`; kept relative
                        to that folder)
    backup_dir          --backup-dir > toml > ./backups
    lock_ttl_seconds    toml > 900
    guard_tables        toml `row_loss_guard_tables` > every table

With `--env NAME`, `[env.NAME]` of either file overrides its top level. The wrangler
entry (found by binding or database_name, as wrangler does) also gives `database_id`.
Relative paths are resolved against the directory of the file that holds them (flags:
the working directory), so running from a subdirectory with `--config` still works.
"""

from __future__ import annotations

import dataclasses
import difflib
import getpass
import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from d1deploy import configfile, defaults, errors, projectconfig, wrangler_config

ENV_API_TOKEN = "CLOUDFLARE_API_TOKEN"
ENV_ACCOUNT_ID = "CLOUDFLARE_ACCOUNT_ID"
ENV_API_BASE_URL = "CLOUDFLARE_API_BASE_URL"
ENV_DATABASE = "D1DEPLOY_DATABASE"


WRANGLER_FILE_NAMES = ("wrangler.toml", "wrangler.json", "wrangler.jsonc")

_ACCOUNT_ID_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_DEFAULT = "default"
_T = TypeVar("_T")


_PATH_FLAGS = ("config", "wrangler_config", "migrations_dir", "backup_dir")


@dataclass(frozen=True)
class Flags:
    """The command line's share of the settings, typed as the CLI parses it; None (or
    `()`) where an option was not given."""

    database: tuple[str, ...] = ()
    databases_matching: str | None = None
    local: str | None = None
    """The file of `--local=PATH`; `""` for a bare `--local` (the default file)."""
    account_id: str | None = None
    env: str | None = None
    config: Path | None = None
    wrangler_config: Path | None = None
    migrations_dir: Path | None = None
    migrations_table: str | None = None
    backup_dir: Path | None = None

    @classmethod
    def of(cls, values: Mapping[str, object]) -> Flags:
        """Flags from a mapping of option names to values (strings for paths will do);
        names that are not settings flags are ignored, as a command's other options are."""
        known = {f.name for f in dataclasses.fields(cls)}
        typed: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                continue
            if key == "database":
                items = value if isinstance(value, list | tuple) else ()
                typed[key] = tuple(v for v in items if isinstance(v, str))
            elif key in _PATH_FLAGS:
                typed[key] = Path(value) if isinstance(value, str | Path) and value != "" else None
            else:
                typed[key] = value if isinstance(value, str) else None
        return cls(**typed)


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything a command needs to know, each value with its source in `sources`."""

    api_token: str | None
    account_id: str | None
    api_base_url: str
    databases: tuple[str, ...]
    database_id: str | None
    databases_matching: str | None
    local_path: Path | None
    migrations_dir: Path
    migrations_table: str
    migrations_pattern: str
    backup_dir: Path
    lock_ttl_seconds: int
    guard_tables: tuple[str, ...] | None
    env_name: str | None
    config_file: Path | None
    wrangler_file: Path | None
    sources: Mapping[str, str]
    wrangler_choices: tuple[tuple[str | None, str | None, str | None], ...] = ()
    """(binding, database_name, database_id) of each wrangler entry when there are
    several and none was chosen; `require_database` lists them."""

    def __repr__(self) -> str:
        # Written by hand so the token can never reach a log or a traceback's locals.
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "api_token" and value is not None:
                parts.append("api_token=<redacted>")
            elif f.name != "sources":
                parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    @property
    def database(self) -> str | None:
        """The database when exactly one is selected, else None."""
        return self.databases[0] if len(self.databases) == 1 else None

    def describe(self) -> list[tuple[str, str, str]]:
        """(setting, display value, source) rows for `--verbose`; the token is never shown."""
        rows = []
        for f in dataclasses.fields(self):
            if f.name in ("sources", "wrangler_choices"):
                continue
            value = getattr(self, f.name)
            if f.name == "api_token":
                shown = "set (redacted)" if value else "not set"
            elif f.name == "guard_tables" and value is None:
                shown = "every table"
            elif value is None or value == ():
                shown = "not set"
            elif isinstance(value, tuple):
                shown = ", ".join(value)
            else:
                shown = str(value)
            rows.append((f.name, shown, self.sources.get(f.name, _DEFAULT)))
        return rows

    def require_database(self) -> str:
        """The one database to work on.

        :raises errors.ConfigMissing: none was given, listing the wrangler entries to
            choose from when there are several."""
        if self.database is not None:
            return self.database
        if self.wrangler_choices:
            listing = "; ".join(
                f"binding {b or '(none)'}: database_name {n or '(none)'},"
                f" database_id {i or '(none)'}"
                for b, n, i in self.wrangler_choices
            )
            first = next(b or n or i for b, n, i in self.wrangler_choices)
            raise errors.ConfigMissing(
                f"no database chosen: {self.sources['wrangler_choices']} has"
                f" {len(self.wrangler_choices)} d1_databases entries: {listing}",
                hint=f"choose one by binding or database_name with --database (`-d {first}`),"
                f' {ENV_DATABASE}, or binding = "{first}" in {projectconfig.CONFIG_FILE_NAME}',
            )
        raise errors.ConfigMissing(
            "no database given",
            hint='pass --database NAME, set D1DEPLOY_DATABASE, put database = "NAME" in '
            "d1deploy.toml or one d1_databases entry in wrangler.toml, or use --local",
        )

    @property
    def is_fleet(self) -> bool:
        """Several databases (named, or `--databases-matching`) rather than one.

        :raises errors.UsageError: several databases asked for with `--local`."""
        fleet = self.databases_matching is not None or len(self.databases) > 1
        if fleet and self.local_path is not None:
            raise errors.UsageError("--local works on one file; several databases need the D1 API")
        return fleet

    def refuse_mismatch(self, api_name: str) -> None:
        """A wrangler entry whose database_name and database_id are two databases (a
        copied block with prod's id under `staging`) must not reach the wrong one; the
        API named `database_id`'s database `api_name`.

        :raises errors.ConfigMismatch: when the name is another database's."""
        if self.database_id is None or self.database in (None, self.database_id, api_name):
            return
        raise errors.ConfigMismatch(
            f"{self.sources['databases']} names database {self.database!r} with database_id "
            f"{self.database_id}, but the API says {self.database_id} is {api_name!r}; "
            "nothing was changed",
            hint=f"correct database_id or database_name ({self.sources['database_id']}); "
            "`d1deploy databases` lists each database's name and id",
        )

    def require_remote(self) -> tuple[str, str]:
        """(token, account_id) for talking to the API.

        :raises errors.ConfigMissing: naming what is missing and how to set it.
        """
        missing, hints = [], []
        if not self.api_token:
            missing.append(ENV_API_TOKEN)
            hints.append(
                f"export {ENV_API_TOKEN} with an API token that has D1 Edit permission "
                "(create one at https://dash.cloudflare.com/profile/api-tokens)"
            )
        if not self.account_id:
            missing.append("the Cloudflare account id")
            hints.append(
                f"pass --account-id ID, export {ENV_ACCOUNT_ID}, or set account_id in "
                f"{projectconfig.CONFIG_FILE_NAME} or wrangler.toml"
            )
        if missing:
            raise errors.ConfigMissing(
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set, "
                "so the D1 API cannot be reached",
                hint="; ".join(hints) + " (or use --local to work on a local SQLite file)",
            )
        assert self.api_token is not None and self.account_id is not None
        return self.api_token, self.account_id


def resolve(
    *, flags: Flags | Mapping[str, object], environ: Mapping[str, str], cwd: Path
) -> Settings:
    """Build `Settings` from flags (`Flags`, or a mapping `Flags.of` reads), environment,
    project config and wrangler config.

    Precedence: flag > environment > d1deploy.toml / [tool.d1deploy] > wrangler config >
    default (see the module docstring for the table).

    :raises errors.ConfigFileError: a config file is missing, malformed, has an unknown
        key or a value of the wrong type.
    :raises errors.UsageError: bad flag or environment value (account id, API base URL,
        unknown --env, --database together with --databases-matching).
    """
    cwd = Path(cwd)
    if not isinstance(flags, Flags):
        flags = Flags.of(flags)
    sources: dict[str, str] = {}
    env_name = _flag_text(flags, "env")
    if env_name:
        sources["env_name"] = "flag --env"

    config = projectconfig.find(_flag_text(flags, "config"), cwd, env_name, sources)
    wrangler = _find_wrangler(flags, cwd, config, env_name, sources)
    _check_env_name(env_name, config, wrangler)

    token = _env_text(environ, ENV_API_TOKEN)
    if token:
        sources["api_token"] = f"env {ENV_API_TOKEN}"

    account_id, sources["account_id"] = _pick(
        (_flag_text(flags, "account_id"), "flag --account-id"),
        (_env_text(environ, ENV_ACCOUNT_ID), f"env {ENV_ACCOUNT_ID}"),
        config.text("account_id"),
        wrangler.account_id if wrangler else (None, ""),
    )
    if account_id is not None and not _ACCOUNT_ID_RE.match(account_id):
        # The value is not echoed: a mistyped secret could have landed here.
        raise errors.UsageError(
            f"the account id from {sources['account_id']} is not a valid Cloudflare account id",
            hint="an account id has only letters, digits, '-' and '_'; copy it from the "
            "dashboard's Workers & Pages overview",
        )

    base_url, sources["api_base_url"] = _pick(
        (_env_text(environ, ENV_API_BASE_URL), f"env {ENV_API_BASE_URL}"),
        (defaults.API_BASE_URL, _DEFAULT),
    )
    assert base_url is not None
    base_url = validate_base_url(base_url, sources["api_base_url"])

    databases_matching = _flag_text(flags, "databases_matching")
    flag_databases = _flag_list(flags, "database")
    if databases_matching:
        sources["databases_matching"] = "flag --databases-matching"
        if flag_databases:
            raise errors.UsageError(
                "--database and --databases-matching were both given",
                hint="name databases with --database, or select them by pattern with "
                "--databases-matching, not both",
            )
    env_databases = _split_list(environ.get(ENV_DATABASE, ""))
    config_database, config_database_source = config.value("database")
    requested, database_source = _pick(
        (flag_databases or None, "flag --database"),
        (env_databases or None, f"env {ENV_DATABASE}"),
        (_as_tuple(config_database), config_database_source),
    )
    if databases_matching:
        # The pattern is a flag, so it beats any database named by env or file.
        requested, database_source = None, _DEFAULT

    entry = None
    if wrangler is not None:
        entry = wrangler.select(requested, config.text("binding"), config.label)
    elif config.text("binding")[0] is not None:
        raise errors.ConfigFileError(
            "`binding` is set but no wrangler config was found",
            file=config.label,
            hint="put wrangler.toml/.json/.jsonc in the working directory, or set "
            'wrangler_config = "PATH" in d1deploy.toml (see --config)',
        )
    databases: tuple[str, ...] = ()
    database_id = None
    if requested and entry is not None:
        databases = (entry.database,)
        database_id = entry.database_id
        sources["databases"] = f"{database_source} -> {entry.where}"
    elif requested:
        databases = requested
        sources["databases"] = database_source
    elif entry is not None and not databases_matching:
        databases = (entry.database,)
        database_id = entry.database_id
        sources["databases"] = entry.where
    if database_id and entry is not None:
        sources["database_id"] = entry.source("database_id")
    choices: tuple[tuple[str | None, str | None, str | None], ...] = ()
    if wrangler is not None and not databases and len(wrangler.entries) > 1:
        choices = tuple((e.binding, e.database_name, e.database_id) for e in wrangler.entries)
        sources["wrangler_choices"] = wrangler.entries[0].section.rsplit(" d1_databases", 1)[0]

    migrations_dir, sources["migrations_dir"] = _pick(
        _flag_path(flags, "migrations_dir", cwd, "flag --migrations-dir"),
        config.path("migrations_dir"),
        entry.migrations_dir if entry else (None, ""),
        (
            entry.default_migrations_dir if entry else None,
            f"wrangler's default: migrations/ beside {wrangler.label if wrangler else ''}",
        ),
        (cwd / defaults.MIGRATIONS_DIR, _DEFAULT),
    )
    config_table, config_table_source = config.text("migrations_table")
    migrations_table, sources["migrations_table"] = _pick(
        # An empty name falls through to the next layer, as wrangler's `||` does.
        (_flag_text(flags, "migrations_table"), "flag --migrations-table"),
        (config_table or None, config_table_source),
        (
            (entry.migrations_table or None) if entry else None,
            entry.source("migrations_table") if entry else "",
        ),
        (defaults.MIGRATIONS_TABLE, _DEFAULT),
    )

    migrations_pattern, sources["migrations_pattern"] = _pick(
        _toml_pattern(config, migrations_dir),
        entry.migrations_pattern if entry else (None, ""),
        (defaults.MIGRATIONS_PATTERN, _DEFAULT),
    )

    local_path = None
    local_flag = flags.local
    if local_flag is not None:
        local_path, sources["local_path"] = _pick(
            _flag_path(flags, "local", cwd, "flag --local") if local_flag else (None, ""),
            config.path("local_path"),
            (cwd / defaults.LOCAL_PATH, _DEFAULT),
        )

    backup_dir, sources["backup_dir"] = _pick(
        _flag_path(flags, "backup_dir", cwd, "flag --backup-dir"),
        config.path("backup_dir"),
        (cwd / defaults.BACKUP_DIR, _DEFAULT),
    )
    lock_ttl, sources["lock_ttl_seconds"] = _pick(
        config.value("lock_ttl_seconds"), (defaults.LOCK_TTL_SECONDS, _DEFAULT)
    )
    guard_tables, guard_source = config.value("row_loss_guard_tables")
    if guard_tables is not None:
        sources["guard_tables"] = guard_source

    assert migrations_dir is not None and migrations_table is not None and backup_dir is not None
    assert migrations_pattern is not None
    for f in dataclasses.fields(Settings):
        if f.name != "sources":
            sources.setdefault(f.name, _DEFAULT)
    return Settings(
        api_token=token,
        account_id=account_id,
        api_base_url=base_url,
        databases=databases,
        database_id=database_id,
        databases_matching=databases_matching,
        local_path=local_path,
        migrations_dir=migrations_dir,
        migrations_table=migrations_table,
        migrations_pattern=migrations_pattern,
        backup_dir=backup_dir,
        lock_ttl_seconds=lock_ttl if isinstance(lock_ttl, int) else defaults.LOCK_TTL_SECONDS,
        guard_tables=_as_tuple(guard_tables),
        env_name=env_name,
        config_file=config.file,
        wrangler_file=wrangler.path if wrangler else None,
        sources=MappingProxyType(sources),
        wrangler_choices=choices,
    )


def actor(environ: Mapping[str, str]) -> str:
    """Who is running: the Actions run URL in GitHub Actions, else `user@host pid N`."""
    repository, run_id = environ.get("GITHUB_REPOSITORY"), environ.get("GITHUB_RUN_ID")
    if environ.get("GITHUB_ACTIONS") == "true" and repository and run_id:
        server = (environ.get("GITHUB_SERVER_URL") or "https://github.com").rstrip("/")
        return f"{server}/{repository}/actions/runs/{run_id}"
    # getpass reads os.environ first; the injected environ is consulted in its place.
    user = next(
        (environ[k] for k in ("LOGNAME", "USER", "LNAME", "USERNAME") if environ.get(k)), ""
    )
    if not user:
        try:
            user = getpass.getuser()
        except (OSError, KeyError):
            user = "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


# --- wrangler config -------------------------------------------------------------------


def _find_wrangler(
    flags: Flags,
    cwd: Path,
    config: projectconfig.ProjectConfig,
    env_name: str | None,
    sources: dict[str, str],
) -> wrangler_config.Wrangler | None:
    flag_path = _flag_text(flags, "wrangler_config")
    config_path, config_source = config.path("wrangler_config")
    named_in = None  # the config file that names the wrangler file, for the error
    if flag_path:
        path, source = configfile.join(cwd, flag_path), "flag --wrangler-config"
    elif config_path is not None:
        path, source, named_in = config_path, f"{config_source} wrangler_config", config.label
    else:
        found = next((cwd / n for n in WRANGLER_FILE_NAMES if (cwd / n).is_file()), None)
        if found is None:
            return None
        path, source = found, "found in the working directory"
    if not path.is_file():
        raise errors.ConfigFileError(
            f"wrangler config {configfile.display(path, cwd)} (from {source}) does not exist",
            file=named_in,
            hint="check the path; relative paths start at the directory of the file naming them",
        )
    sources["wrangler_file"] = source
    return wrangler_config.load(path, cwd, env_name)


def _toml_pattern(
    config: projectconfig.ProjectConfig, migrations_dir: Path | None
) -> tuple[str | None, str]:
    """d1deploy.toml's `migrations_pattern`, written as wrangler's (from the file's folder,
    starting with the migrations folder), relative to the migrations folder."""
    pattern, source = config.text("migrations_pattern")
    if pattern is None or config.file is None or migrations_dir is None:
        return None, ""
    folder = os.path.relpath(migrations_dir, config.file.parent).replace(os.sep, "/")
    return wrangler_config.pattern_in(pattern, folder, config.label, "migrations_pattern"), source


# --- shared helpers --------------------------------------------------------------------


def _check_env_name(
    env_name: str | None,
    config: projectconfig.ProjectConfig,
    wrangler: wrangler_config.Wrangler | None,
) -> None:
    """Refuse an --env no file defines: a typo must not silently deploy to the top level."""
    if not env_name:
        return
    known = config.envs | (wrangler.envs if wrangler else frozenset())
    if env_name in known:
        return
    files = " or ".join(x for x in (config.label, wrangler.label if wrangler else "") if x)
    close = difflib.get_close_matches(env_name, sorted(known), n=1)
    raise errors.UsageError(
        f"--env {env_name} was given but {files or 'no config file'} defines no [env.{env_name}]",
        hint=(f"did you mean --env {close[0]}? " if close else "")
        + (f"defined environments: {', '.join(sorted(known))}" if known else "drop --env")
        + (
            ""
            if files
            else f"; --env selects [env.NAME] in {projectconfig.CONFIG_FILE_NAME}"
            " or the wrangler config"
        ),
    )


def validate_base_url(url: str, source: str = ENV_API_BASE_URL) -> str:
    """Check an API base URL and return it without a trailing slash.

    It must be http(s) and end with `/client/v4`; plain http:// only to a loopback host,
    since the token would otherwise travel unencrypted. The client checks again."""
    hint = (
        f"set {ENV_API_BASE_URL} to an https:// URL ending in /client/v4 (default "
        f"{defaults.API_BASE_URL}); plain http:// is accepted only for a loopback host "
        "(127.0.0.1, localhost, ::1)"
    )
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.UsageError(f"the API base URL from {source} is not an http(s) URL", hint=hint)
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise errors.UsageError(
            f"the API base URL from {source} uses plain http:// to {parts.hostname}, "
            "which would send the API token unencrypted",
            hint=hint,
        )
    path = parts.path.rstrip("/")
    if not path.endswith("/client/v4"):
        raise errors.UsageError(
            f"the API base URL from {source} does not end with /client/v4", hint=hint
        )
    return urlunsplit(parts._replace(path=path))


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _pick(*candidates: tuple[_T | None, str]) -> tuple[_T | None, str]:
    """The first (value, source) whose value is set; (None, "default") when none is."""
    return next(((v, s) for v, s in candidates if v is not None), (None, _DEFAULT))


def _env_text(environ: Mapping[str, str], name: str) -> str | None:
    # CI systems set unset secrets to "", which must read as "not set".
    return environ.get(name, "").strip() or None


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(p.strip() for p in value.split(",") if p.strip()))


def _flag_text(flags: Flags, key: str) -> str | None:
    value = getattr(flags, key)
    if isinstance(value, Path):
        return str(value)
    return value if isinstance(value, str) and value != "" else None


def _flag_list(flags: Flags, key: str) -> tuple[str, ...]:
    value: tuple[str, ...] = getattr(flags, key)
    return tuple(dict.fromkeys(v.strip() for v in value if v.strip()))


def _flag_path(flags: Flags, key: str, cwd: Path, source: str) -> tuple[Path | None, str]:
    value = _flag_text(flags, key)
    return (configfile.join(cwd, value) if value else None), source


def _as_tuple(value: object) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(dict.fromkeys(str(v) for v in value))
    return None
