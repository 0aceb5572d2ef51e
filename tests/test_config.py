"""Tests for `d1deploy.config`: precedence, sources, file formats, validation, redaction."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from d1deploy import errors
from d1deploy.config import Settings, actor, resolve
from d1deploy.configfile import strip_jsonc

TOKEN = "tok-SECRET-5f3a9c0d1e2b"  # recognisable, so a leak is easy to spot
ACCOUNT = "acct0123456789abcdef"
UUID = "11111111-2222-3333-4444-555555555555"


def run(
    cwd: Path,
    environ: Mapping[str, str] | None = None,
    **flags: object,
) -> Settings:
    return resolve(flags=flags, environ=dict(environ or {}), cwd=cwd)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


WRANGLER_ONE = f"""
name = "bot"
main = "src/index.ts"
account_id = "wrangleraccount"

[vars]
SOMETHING = "unrelated"

[[d1_databases]]
binding = "DB"
database_name = "telegram-conversations"
database_id = "{UUID}"
migrations_dir = "./db/migrations/"
migrations_table = "wr_migrations"
"""


# --- defaults and precedence ------------------------------------------------------------


def test_defaults_without_any_file_or_env(tmp_path: Path) -> None:
    s = run(tmp_path)
    assert s.api_token is None
    assert s.account_id is None
    assert s.api_base_url == "https://api.cloudflare.com/client/v4"
    assert s.databases == ()
    assert s.database is None
    assert s.database_id is None
    assert s.local_path is None
    assert s.migrations_dir == tmp_path / "migrations"
    assert s.migrations_table == "d1_migrations"
    assert s.backup_dir == tmp_path / "backups"
    assert s.lock_ttl_seconds == 900
    assert s.guard_tables is None
    assert s.config_file is None and s.wrangler_file is None
    assert set(s.sources.values()) == {"default"}
    assert set(s.sources) == {f.name for f in dataclasses.fields(Settings)} - {"sources"}


def layered_project(tmp_path: Path) -> None:
    """Every layer sets account_id, database, migrations_dir and migrations_table."""
    write(
        tmp_path / "d1deploy.toml",
        """
account_id = "tomlaccount"
database = "toml-db"
migrations_dir = "toml-migrations"
migrations_table = "toml_table"
""",
    )
    write(tmp_path / "wrangler.toml", WRANGLER_ONE)


ALL_FLAGS: dict[str, object] = {
    "account_id": "flagaccount",
    "database": ["flag-db"],
    "migrations_dir": "flag-migrations",
    "migrations_table": "flag_table",
}
ALL_ENV = {"CLOUDFLARE_ACCOUNT_ID": "envaccount", "D1DEPLOY_DATABASE": "env-db"}


def test_flag_beats_everything(tmp_path: Path) -> None:
    layered_project(tmp_path)
    s = run(tmp_path, ALL_ENV, **ALL_FLAGS)
    assert (s.account_id, s.sources["account_id"]) == ("flagaccount", "flag --account-id")
    assert (s.databases, s.sources["databases"]) == (("flag-db",), "flag --database")
    assert s.database_id is None  # flag-db matches no wrangler entry
    assert s.migrations_dir == tmp_path / "flag-migrations"
    assert s.sources["migrations_dir"] == "flag --migrations-dir"
    assert (s.migrations_table, s.sources["migrations_table"]) == (
        "flag_table",
        "flag --migrations-table",
    )


def test_environment_beats_files(tmp_path: Path) -> None:
    layered_project(tmp_path)
    s = run(tmp_path, ALL_ENV)
    assert (s.account_id, s.sources["account_id"]) == ("envaccount", "env CLOUDFLARE_ACCOUNT_ID")
    assert (s.databases, s.sources["databases"]) == (("env-db",), "env D1DEPLOY_DATABASE")


def test_project_config_beats_wrangler(tmp_path: Path) -> None:
    layered_project(tmp_path)
    s = run(tmp_path)
    assert (s.account_id, s.sources["account_id"]) == ("tomlaccount", "d1deploy.toml")
    assert (s.databases, s.sources["databases"]) == (("toml-db",), "d1deploy.toml")
    assert s.migrations_dir == tmp_path / "toml-migrations"
    assert s.sources["migrations_dir"] == "d1deploy.toml"
    assert (s.migrations_table, s.sources["migrations_table"]) == ("toml_table", "d1deploy.toml")
    assert s.config_file == tmp_path / "d1deploy.toml"
    assert s.wrangler_file == tmp_path / "wrangler.toml"


def test_wrangler_beats_defaults(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.toml", WRANGLER_ONE)
    s = run(tmp_path)
    assert (s.account_id, s.sources["account_id"]) == ("wrangleraccount", "wrangler.toml")
    assert s.databases == ("telegram-conversations",)
    assert s.database == "telegram-conversations"
    assert s.sources["databases"] == "wrangler.toml d1_databases[0]"
    assert s.database_id == UUID
    assert s.sources["database_id"] == "wrangler.toml d1_databases[0].database_id"
    assert s.migrations_dir == tmp_path / "db" / "migrations"
    assert s.sources["migrations_dir"] == "wrangler.toml d1_databases[0].migrations_dir"
    assert s.migrations_table == "wr_migrations"
    assert s.sources["migrations_table"] == "wrangler.toml d1_databases[0].migrations_table"
    assert s.sources["wrangler_file"] == "found in the working directory"


def test_empty_environment_values_count_as_unset(tmp_path: Path) -> None:
    # CI systems expand a missing secret to "".
    s = run(
        tmp_path,
        {"CLOUDFLARE_API_TOKEN": "", "CLOUDFLARE_ACCOUNT_ID": " ", "D1DEPLOY_DATABASE": ","},
    )
    assert s.api_token is None and s.account_id is None and s.databases == ()


def test_env_database_is_comma_separated_and_deduplicated(tmp_path: Path) -> None:
    s = run(tmp_path, {"D1DEPLOY_DATABASE": " a, b ,,a "})
    assert s.databases == ("a", "b")
    assert s.database is None


def test_repeated_database_flag(tmp_path: Path) -> None:
    s = run(tmp_path, database=["one", "two", "one"])
    assert s.databases == ("one", "two")


def test_config_database_may_be_a_list(tmp_path: Path) -> None:
    write(tmp_path / "d1deploy.toml", 'database = ["a", "b"]\n')
    assert run(tmp_path).databases == ("a", "b")


def test_project_only_settings(tmp_path: Path) -> None:
    write(
        tmp_path / "conf" / "d1deploy.toml",
        """
backup_dir = "../bk"
lock_ttl_seconds = 60
row_loss_guard_tables = ["user_deposits", "deposit_transactions"]
local_path = "data/dev.sqlite"
""",
    )
    s = run(tmp_path, config="conf/d1deploy.toml", backup_dir=None)
    # Paths in a config file are relative to that file's directory.
    assert s.backup_dir == tmp_path / "bk"
    assert s.lock_ttl_seconds == 60
    assert s.guard_tables == ("user_deposits", "deposit_transactions")
    assert s.local_path is None  # not running locally
    assert s.sources["config_file"] == "flag --config"
    assert s.sources["lock_ttl_seconds"] == "conf/d1deploy.toml"
    local = run(tmp_path, config="conf/d1deploy.toml", local="")
    assert local.local_path == tmp_path / "conf" / "data" / "dev.sqlite"
    assert local.sources["local_path"] == "conf/d1deploy.toml"
    flagged = run(tmp_path, config="conf/d1deploy.toml", local="x.sqlite", backup_dir="b")
    assert flagged.local_path == tmp_path / "x.sqlite"
    assert flagged.sources["local_path"] == "flag --local"
    assert flagged.backup_dir == tmp_path / "b"


def test_local_default_path(tmp_path: Path) -> None:
    s = run(tmp_path, local="")
    assert s.local_path == tmp_path / ".d1deploy" / "local.sqlite"
    assert s.sources["local_path"] == "default"


def test_api_token_only_from_environment(tmp_path: Path) -> None:
    s = run(tmp_path, {"CLOUDFLARE_API_TOKEN": TOKEN}, api_token="flag-token")
    assert s.api_token == TOKEN
    assert s.sources["api_token"] == "env CLOUDFLARE_API_TOKEN"
    write(tmp_path / "d1deploy.toml", 'api_token = "x"\n')
    with pytest.raises(errors.ConfigFileError, match="unknown key `api_token`"):
        run(tmp_path)


# --- --env blocks -----------------------------------------------------------------------


def test_env_block_in_project_config(tmp_path: Path) -> None:
    write(
        tmp_path / "d1deploy.toml",
        """
database = "prod-db"
lock_ttl_seconds = 600

[env.staging]
database = "staging-db"
""",
    )
    s = run(tmp_path, env="staging")
    assert s.env_name == "staging" and s.sources["env_name"] == "flag --env"
    assert (s.databases, s.sources["databases"]) == (("staging-db",), "d1deploy.toml [env.staging]")
    # Keys the block does not set come from the top level.
    assert (s.lock_ttl_seconds, s.sources["lock_ttl_seconds"]) == (600, "d1deploy.toml")


WRANGLER_ENVS = """
account_id = "topaccount"

[[d1_databases]]
binding = "DB"
database_name = "prod-db"
database_id = "prod-uuid"

[env.staging]
account_id = "stagingaccount"

[[env.staging.d1_databases]]
binding = "DB"
database_name = "staging-db"
database_id = "staging-uuid"
migrations_dir = "staging-migrations"

[env.preview]
name = "bot-preview"
"""


def test_env_block_in_wrangler(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.toml", WRANGLER_ENVS)
    s = run(tmp_path, env="staging")
    assert s.account_id == "stagingaccount"
    assert s.sources["account_id"] == "wrangler.toml [env.staging]"
    assert (s.databases, s.database_id) == (("staging-db",), "staging-uuid")
    assert s.sources["databases"] == "wrangler.toml [env.staging] d1_databases[0]"
    assert s.migrations_dir == tmp_path / "staging-migrations"

    top = run(tmp_path)
    assert (top.databases, top.database_id, top.account_id) == (
        ("prod-db",),
        "prod-uuid",
        "topaccount",
    )
    assert top.migrations_dir == tmp_path / "migrations"
    assert top.sources["migrations_dir"] == "wrangler's default: migrations/ beside wrangler.toml"


def test_wrangler_env_block_without_d1_falls_back_and_says_so(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.toml", WRANGLER_ENVS)
    s = run(tmp_path, env="preview")
    assert (s.databases, s.account_id) == (("prod-db",), "topaccount")
    assert s.sources["databases"] == (
        "wrangler.toml d1_databases[0] (top level; [env.preview] has no d1_databases)"
    )
    assert s.sources["database_id"] == (
        "wrangler.toml d1_databases[0].database_id (top level; [env.preview] has no d1_databases)"
    )
    assert s.sources["account_id"] == "wrangler.toml (top level; [env.preview] has no account_id)"


def test_env_defined_only_in_one_file_is_enough(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.toml", WRANGLER_ENVS)
    write(tmp_path / "d1deploy.toml", "[env.qa]\nlock_ttl_seconds = 5\n")
    s = run(tmp_path, env="qa")
    assert s.lock_ttl_seconds == 5
    assert s.sources["databases"].endswith("(top level; [env.qa] has no d1_databases)")


def test_unknown_env_is_refused_with_suggestion(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.toml", WRANGLER_ENVS)
    with pytest.raises(errors.UsageError) as info:
        run(tmp_path, env="stagign")
    assert "--env stagign" in str(info.value)
    assert info.value.hint is not None and "did you mean --env staging?" in info.value.hint
    with pytest.raises(errors.UsageError, match="no config file"):
        run(tmp_path / "nowhere", env="staging")


# --- pyproject.toml ---------------------------------------------------------------------


def test_pyproject_tool_table(tmp_path: Path) -> None:
    write(
        tmp_path / "pyproject.toml",
        """
[project]
name = "bot"

[tool.d1deploy]
database = "py-db"
migrations_table = ""

[tool.d1deploy.env.staging]
database = "py-staging"
""",
    )
    s = run(tmp_path)
    assert (s.databases, s.sources["databases"]) == (("py-db",), "pyproject.toml [tool.d1deploy]")
    assert s.config_file == tmp_path / "pyproject.toml"
    # An empty migrations_table falls back, as wrangler's `||` does.
    assert (s.migrations_table, s.sources["migrations_table"]) == ("d1_migrations", "default")
    staged = run(tmp_path, env="staging")
    assert staged.sources["databases"] == "pyproject.toml [tool.d1deploy.env.staging]"


def test_pyproject_without_tool_table_is_not_a_config(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n')
    s = run(tmp_path)
    assert s.config_file is None and s.sources["config_file"] == "default"
    with pytest.raises(errors.ConfigFileError, match=r"no \[tool.d1deploy\] table"):
        run(tmp_path, config="pyproject.toml")


def test_d1deploy_toml_wins_over_pyproject(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[tool.d1deploy]\ndatabase = "py"\n')
    write(tmp_path / "d1deploy.toml", 'database = "toml"\n')
    assert run(tmp_path).databases == ("toml",)


def test_pyproject_unknown_key_names_full_path(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", "[tool.d1deploy.env.prod]\nbackupdir = 'x'\n")
    with pytest.raises(errors.ConfigFileError) as info:
        run(tmp_path)
    assert "`tool.d1deploy.env.prod.backupdir`" in str(info.value)
    assert info.value.hint is not None and "did you mean `backup_dir`?" in info.value.hint


# --- wrangler formats and entry selection -----------------------------------------------

WRANGLER_JSONC = """{
  // the worker
  "name": "bot", /* inline */ "main": "https://example.com/not//a/comment",
  "account_id": "jsonaccount",
  "routes": ["example.com/*", "a/*b*/c"],
  "d1_databases": [
    {
      "binding": "DB", // trailing comment
      "database_name": "json-db",
      "database_id": "json-uuid",
      "migrations_dir": "sub\\\\migs",
    },
  ],
}
"""


def test_wrangler_jsonc(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.jsonc", WRANGLER_JSONC)
    s = run(tmp_path)
    assert (s.account_id, s.databases, s.database_id) == ("jsonaccount", ("json-db",), "json-uuid")
    # Backslashes are normalised to `/` as wrangler does.
    assert s.migrations_dir == tmp_path / "sub" / "migs"
    assert s.sources["databases"] == "wrangler.jsonc d1_databases[0]"


def test_wrangler_json(tmp_path: Path) -> None:
    data = {"account_id": "a1", "d1_databases": [{"binding": "DB", "database_name": "j"}]}
    write(tmp_path / "wrangler.json", json.dumps(data))
    s = run(tmp_path)
    assert (s.account_id, s.databases, s.database_id) == ("a1", ("j",), None)
    assert s.wrangler_file == tmp_path / "wrangler.json"


def test_wrangler_file_order(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.jsonc", '{"account_id": "c"}')
    write(tmp_path / "wrangler.json", '{"account_id": "b"}')
    assert run(tmp_path).account_id == "b"
    write(tmp_path / "wrangler.toml", 'account_id = "a"')
    assert run(tmp_path).account_id == "a"


def test_migrations_dir_is_relative_to_the_wrangler_file(tmp_path: Path) -> None:
    write(tmp_path / "worker" / "wrangler.toml", WRANGLER_ONE)
    work = tmp_path / "elsewhere"
    work.mkdir()
    s = run(work, wrangler_config="../worker/wrangler.toml")
    assert s.migrations_dir == tmp_path / "worker" / "db" / "migrations"
    assert s.sources["wrangler_file"] == "flag --wrangler-config"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(".", ""), ("./", ""), ("./a/b/", "a/b"), ("a\\b", "a/b"), ("/abs/m", "/abs/m")],
)
def test_wrangler_migrations_dir_normalisation(tmp_path: Path, value: str, expected: str) -> None:
    text = json.dumps({"d1_databases": [{"database_name": "d", "migrations_dir": value}]})
    write(tmp_path / "w" / "wrangler.json", text)
    s = run(tmp_path, wrangler_config="w/wrangler.json")
    assert s.migrations_dir == tmp_path / "w" / expected


def test_wrangler_config_named_in_project_config(tmp_path: Path) -> None:
    write(tmp_path / "cfg" / "d1deploy.toml", 'wrangler_config = "../app/wrangler.toml"\n')
    write(tmp_path / "app" / "wrangler.toml", WRANGLER_ONE)
    s = run(tmp_path, config="cfg/d1deploy.toml")
    assert s.wrangler_file == tmp_path / "app" / "wrangler.toml"
    assert s.sources["wrangler_file"] == "cfg/d1deploy.toml wrangler_config"
    assert s.database_id == UUID


def test_missing_named_files(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigFileError, match=r"config file nope\.toml does not exist"):
        run(tmp_path, config="nope.toml")
    with pytest.raises(errors.ConfigFileError, match=r"wrangler config w\.toml .* does not exist"):
        run(tmp_path, wrangler_config="w.toml")
    write(tmp_path / "d1deploy.toml", 'wrangler_config = "gone.toml"\n')
    with pytest.raises(errors.ConfigFileError) as info:
        run(tmp_path)
    assert info.value.file == "d1deploy.toml"


MANY = """
[[d1_databases]]
binding = "DB"
database_name = "main-db"
database_id = "main-uuid"

[[d1_databases]]
binding = "ANALYTICS"
database_name = "analytics"
migrations_dir = "analytics-migrations"

[[d1_databases]]
binding = "main-db"
database_name = "shadowed"
"""


@pytest.mark.parametrize(
    ("requested", "name", "index"),
    [("DB", "main-db", 0), ("main-db", "main-db", 0), ("ANALYTICS", "analytics", 1)],
)
def test_entry_matched_by_binding_or_name_first_wins(
    tmp_path: Path, requested: str, name: str, index: int
) -> None:
    write(tmp_path / "wrangler.toml", MANY)
    s = run(tmp_path, database=[requested])
    assert s.databases == (name,)
    assert s.sources["databases"] == f"flag --database -> wrangler.toml d1_databases[{index}]"


def test_several_entries_and_none_requested_leaves_databases_empty(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.toml", MANY)
    s = run(tmp_path)
    assert s.databases == () and s.database_id is None
    assert s.migrations_dir == tmp_path / "migrations"
    # A command that needs one lists them, and how to choose.
    with pytest.raises(errors.ConfigMissing) as info:
        s.require_database()
    assert info.value.message == (
        "no database chosen: wrangler.toml has 3 d1_databases entries:"
        " binding DB: database_name main-db, database_id main-uuid;"
        " binding ANALYTICS: database_name analytics, database_id (none);"
        " binding main-db: database_name shadowed, database_id (none)"
    )
    assert info.value.hint is not None and "`-d DB`" in info.value.hint
    assert "d1_databases" not in str(s.describe())  # -v shows settings, not this list


def test_several_entries_of_an_env_are_listed_under_its_name(tmp_path: Path) -> None:
    staging = MANY.replace("[[d1_", "[[env.staging.d1_")
    write(tmp_path / "wrangler.toml", "[env.staging]\n" + staging)
    with pytest.raises(errors.ConfigMissing, match=r"wrangler.toml \[env.staging\] has 3 d1_"):
        run(tmp_path, env="staging").require_database()


def test_unmatched_database_keeps_its_name(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.toml", MANY)
    s = run(tmp_path, {"D1DEPLOY_DATABASE": UUID})
    assert (s.databases, s.database_id) == ((UUID,), None)


def test_binding_key_selects_entry(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.toml", MANY)
    write(tmp_path / "d1deploy.toml", 'binding = "ANALYTICS"\n')
    s = run(tmp_path)
    assert s.databases == ("analytics",)
    assert s.migrations_dir == tmp_path / "analytics-migrations"
    write(tmp_path / "d1deploy.toml", 'binding = "NOPE"\n')
    with pytest.raises(errors.ConfigFileError) as info:
        run(tmp_path)
    assert info.value.hint is not None and "DB, ANALYTICS, main-db" in info.value.hint


def test_binding_without_wrangler_config(tmp_path: Path) -> None:
    write(tmp_path / "d1deploy.toml", 'binding = "DB"\n')
    with pytest.raises(errors.ConfigFileError, match="no wrangler config was found") as info:
        run(tmp_path)
    assert info.value.file == "d1deploy.toml"
    # The hint names the setting that exists (no command has a --wrangler-config).
    assert info.value.hint is not None and "wrangler_config = " in info.value.hint


def test_entry_with_only_database_id(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.json", json.dumps({"d1_databases": [{"database_id": UUID}]}))
    s = run(tmp_path)
    assert (s.databases, s.database_id) == ((UUID,), UUID)


def test_fleet_mode(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.toml", WRANGLER_ONE)
    s = run(tmp_path, {"D1DEPLOY_DATABASE": "x"}, databases_matching="tenant-*")
    assert s.databases_matching == "tenant-*"
    assert s.databases == () and s.database_id is None
    # The only wrangler entry still says where the migrations live.
    assert s.migrations_dir == tmp_path / "db" / "migrations"
    with pytest.raises(errors.UsageError, match="both given"):
        run(tmp_path, database=["a"], databases_matching="tenant-*")


# --- errors in files --------------------------------------------------------------------


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    write(tmp_path / "d1deploy.toml", 'databse = "x"\n')
    with pytest.raises(errors.ConfigFileError) as info:
        run(tmp_path)
    err = info.value
    assert err.exit_code == 2
    assert err.file == "d1deploy.toml"
    assert str(err) == "d1deploy.toml: unknown key `databse`"
    assert err.hint is not None and err.hint.startswith("did you mean `database`?")


def test_unknown_key_in_env_block(tmp_path: Path) -> None:
    write(tmp_path / "d1deploy.toml", "[env.prod]\nlock_ttl = 5\n")
    with pytest.raises(errors.ConfigFileError, match=r"`env\.prod\.lock_ttl`") as info:
        run(tmp_path)
    assert info.value.hint is not None and "`lock_ttl_seconds`" in info.value.hint


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        (
            'lock_ttl_seconds = "x"',
            "lock_ttl_seconds",
            "must be a positive integer (seconds), not a string",
        ),
        ("lock_ttl_seconds = 0", "lock_ttl_seconds", "not an integer that is not positive"),
        ("lock_ttl_seconds = true", "lock_ttl_seconds", "not a boolean"),
        ("database = 3", "database", "must be a string or an array of strings, not an integer"),
        ("row_loss_guard_tables = []", "row_loss_guard_tables", "not an empty array"),
        ('row_loss_guard_tables = "t"', "row_loss_guard_tables", "not a string"),
        ('migrations_dir = ""', "migrations_dir", "not an empty string"),
        ("env = 1", "env", "must be a table of [env.NAME] tables"),
        ("[env.prod]\naccount_id = 1.5", "env.prod.account_id", "not a float"),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, key: str, expected: str) -> None:
    write(tmp_path / "d1deploy.toml", text + "\n")
    with pytest.raises(errors.ConfigFileError) as info:
        run(tmp_path)
    assert str(info.value).startswith(f"d1deploy.toml: `{key}` must be")
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("account_id = 5", "account_id"),
        ("d1_databases = {}", "d1_databases"),
        ("d1_databases = [1]", "d1_databases[0]"),
        (
            '[[d1_databases]]\ndatabase_name = "x"\nmigrations_table = 2',
            "d1_databases[0].migrations_table",
        ),
        (
            '[env.a]\nd1_databases = [{binding = 1, database_name = "x"}]',
            "env.a.d1_databases[0].binding",
        ),
    ],
)
def test_wrong_types_in_wrangler(tmp_path: Path, text: str, key: str) -> None:
    write(tmp_path / "wrangler.toml", text + "\n")
    with pytest.raises(errors.ConfigFileError, match=re.escape(f"wrangler.toml: `{key}` must be")):
        run(tmp_path, env="a" if key.startswith("env") else None)


def test_wrangler_entry_needs_a_name_or_id(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.toml", '[[d1_databases]]\nbinding = "DB"\n')
    with pytest.raises(errors.ConfigFileError, match="neither database_name nor database_id"):
        run(tmp_path)


def test_unrelated_wrangler_keys_are_ignored(tmp_path: Path) -> None:
    write(
        tmp_path / "wrangler.toml",
        'compatibility_date = 2024-01-01\nkv_namespaces = [{binding = "KV", id = "x"}]\n'
        '[env.other]\nd1_databases = "not even a list"\n',
    )
    assert run(tmp_path).databases == ()


def test_malformed_toml_reports_line(tmp_path: Path) -> None:
    write(tmp_path / "d1deploy.toml", 'database = "a"\n\nlock_ttl_seconds = = 3\n')
    with pytest.raises(errors.ConfigFileError) as info:
        run(tmp_path)
    assert info.value.file == "d1deploy.toml" and info.value.line == 3
    assert str(info.value).startswith("d1deploy.toml:3: not valid TOML")
    assert "line 3, column" in str(info.value)


def test_malformed_jsonc_reports_original_line(tmp_path: Path) -> None:
    # The comment spans lines; stripping must keep line numbers honest.
    write(tmp_path / "wrangler.jsonc", '{\n  /* a\n  b */ "x": 1,\n  "y" 2\n}\n')
    with pytest.raises(errors.ConfigFileError) as info:
        run(tmp_path)
    assert (info.value.file, info.value.line) == ("wrangler.jsonc", 4)
    assert "line 4, column 7" in str(info.value)


def test_json_must_be_an_object_and_utf8(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.json", "[1]")
    with pytest.raises(errors.ConfigFileError, match="the top level is not a JSON object"):
        run(tmp_path)
    (tmp_path / "wrangler.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(errors.ConfigFileError, match="cannot read the file"):
        run(tmp_path)


def test_unterminated_block_comment(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.jsonc", '{\n"a": 1 /* never closed\n}')
    with pytest.raises(errors.ConfigFileError, match="Unterminated /\\* comment") as info:
        run(tmp_path)
    assert info.value.line == 2


# --- JSONC stripping --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('{"u": "https://x.dev//y"} // c', {"u": "https://x.dev//y"}),
        ('{"u": "/* not */ a comment"}', {"u": "/* not */ a comment"}),
        ('{"q": "say \\"//hi\\"", "n": 1,}', {"q": 'say "//hi"', "n": 1}),
        ('{"b": "\\\\"} // backslash ends the string', {"b": "\\"}),
        ("[1, 2, /* c */ ] ", [1, 2]),
        ('{"a": [1,\n// c\n],\n}', {"a": [1]}),
        ('{"s": ",]"}', {"s": ",]"}),
    ],
)
def test_strip_jsonc(source: str, expected: object) -> None:
    assert json.loads(strip_jsonc(source)) == expected


def test_strip_jsonc_keeps_positions() -> None:
    source = '{ // x\n  "a": 1, /* y\n z */ "b": [2,],\n}'
    stripped = strip_jsonc(source)
    assert len(stripped) == len(source)
    assert [i for i, c in enumerate(stripped) if c == "\n"] == [
        i for i, c in enumerate(source) if c == "\n"
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='/*,]}"\\ ab\n'),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(alphabet='/*,"ab', max_size=5), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(json_values, st.sampled_from([None, 2]))
def test_strip_jsonc_leaves_plain_json_alone(value: object, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    assert strip_jsonc(text) == text


# --- validation of environment values ---------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.cloudflare.com/client/v4", "https://api.cloudflare.com/client/v4"),
        ("https://proxy.example/cf/client/v4/", "https://proxy.example/cf/client/v4"),
        ("http://127.0.0.1:8787/client/v4", "http://127.0.0.1:8787/client/v4"),
        ("http://127.1.2.3/client/v4", "http://127.1.2.3/client/v4"),
        ("http://localhost:9000/client/v4", "http://localhost:9000/client/v4"),
        ("http://[::1]:8080/client/v4", "http://[::1]:8080/client/v4"),
    ],
)
def test_base_url_accepted(tmp_path: Path, url: str, expected: str) -> None:
    s = run(tmp_path, {"CLOUDFLARE_API_BASE_URL": url})
    assert s.api_base_url == expected
    assert s.sources["api_base_url"] == "env CLOUDFLARE_API_BASE_URL"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://example.com/client/v4", "plain http:// to example.com"),
        ("http://128.0.0.1/client/v4", "plain http://"),
        ("http://localhost.example.com/client/v4", "plain http://"),
        ("https://api.cloudflare.com/", "does not end with /client/v4"),
        ("https://api.cloudflare.com/client/v4/accounts", "does not end with /client/v4"),
        ("ftp://127.0.0.1/client/v4", "not an http(s) URL"),
        ("api.cloudflare.com/client/v4", "not an http(s) URL"),
    ],
)
def test_base_url_refused(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(
        errors.UsageError, match=message.replace("(", r"\(").replace(")", r"\)")
    ) as info:
        run(tmp_path, {"CLOUDFLARE_API_BASE_URL": url})
    assert info.value.exit_code == 2
    assert info.value.hint is not None and "loopback" in info.value.hint


@pytest.mark.parametrize(
    ("environ", "flags", "source"),
    [
        ({"CLOUDFLARE_ACCOUNT_ID": "abc/def"}, {}, "env CLOUDFLARE_ACCOUNT_ID"),
        ({}, {"account_id": "a b"}, "flag --account-id"),
    ],
)
def test_account_id_validated(
    tmp_path: Path, environ: dict[str, str], flags: dict[str, object], source: str
) -> None:
    with pytest.raises(errors.UsageError, match=f"account id from {source} is not a valid") as info:
        resolve(flags=flags, environ=environ, cwd=tmp_path)
    assert info.value.hint is not None
    assert run(tmp_path, {"CLOUDFLARE_ACCOUNT_ID": "Ab_9-x"}).account_id == "Ab_9-x"


# --- require_remote, redaction ----------------------------------------------------------


def test_require_remote(tmp_path: Path) -> None:
    env = {"CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_ACCOUNT_ID": ACCOUNT}
    assert run(tmp_path, env).require_remote() == (TOKEN, ACCOUNT)


@pytest.mark.parametrize(
    ("environ", "message", "hint_part"),
    [
        (
            {"CLOUDFLARE_ACCOUNT_ID": ACCOUNT},
            "CLOUDFLARE_API_TOKEN is not set",
            "export CLOUDFLARE_API_TOKEN",
        ),
        ({"CLOUDFLARE_API_TOKEN": TOKEN}, "the Cloudflare account id is not set", "--account-id"),
        (
            {},
            "CLOUDFLARE_API_TOKEN and the Cloudflare account id are not set",
            "CLOUDFLARE_ACCOUNT_ID",
        ),
    ],
)
def test_require_remote_names_what_is_missing(
    tmp_path: Path, environ: dict[str, str], message: str, hint_part: str
) -> None:
    with pytest.raises(errors.ConfigMissing) as info:
        run(tmp_path, environ).require_remote()
    assert info.value.exit_code == 3
    assert str(info.value).startswith(message)
    assert info.value.hint is not None and hint_part in info.value.hint
    assert "--local" in info.value.hint
    assert TOKEN not in str(info.value) + info.value.hint


def test_token_never_in_repr_str_or_describe(tmp_path: Path) -> None:
    s = run(tmp_path, {"CLOUDFLARE_API_TOKEN": TOKEN})
    for text in (repr(s), str(s), repr(s.describe()), repr(s.sources)):
        assert TOKEN not in text
    assert "api_token=<redacted>" in repr(s)
    rows = {name: (shown, source) for name, shown, source in s.describe()}
    assert rows["api_token"] == ("set (redacted)", "env CLOUDFLARE_API_TOKEN")
    assert "api_token=None" in repr(run(tmp_path))
    assert {n: v for n, v, _ in run(tmp_path).describe()}["api_token"] == "not set"


def test_token_never_in_errors(tmp_path: Path) -> None:
    env = {"CLOUDFLARE_API_TOKEN": TOKEN, "CLOUDFLARE_API_BASE_URL": "http://example.com/client/v4"}
    # A token pasted into the wrong variable or file must not be echoed back either.
    attempts: list[tuple[dict[str, str], str, str]] = [
        (env, "", ""),
        ({"CLOUDFLARE_ACCOUNT_ID": TOKEN + "!"}, "", ""),
        ({}, "d1deploy.toml", f'lock_ttl_seconds = "{TOKEN}"\n'),
        ({}, "wrangler.toml", f'account_id = ["{TOKEN}"]\n'),
    ]
    for environ, name, text in attempts:
        if name:
            write(tmp_path / name, text)
        with pytest.raises(errors.D1DeployError) as info:
            run(tmp_path, environ)
        assert TOKEN not in f"{info.value} {info.value.hint} {info.value!r}"
        if name:
            (tmp_path / name).unlink()


def test_describe_rows(tmp_path: Path) -> None:
    write(tmp_path / "wrangler.toml", WRANGLER_ONE)
    rows = {name: (shown, source) for name, shown, source in run(tmp_path).describe()}
    assert rows["databases"] == ("telegram-conversations", "wrangler.toml d1_databases[0]")
    assert rows["guard_tables"] == ("every table", "default")
    assert rows["local_path"] == ("not set", "default")
    assert rows["lock_ttl_seconds"] == ("900", "default")
    assert "sources" not in rows


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = run(tmp_path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.account_id = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.sources["account_id"] = "x"  # type: ignore[index]


# --- actor ------------------------------------------------------------------------------


def test_actor_in_github_actions() -> None:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "me/bot", "GITHUB_RUN_ID": "42"}
    assert actor(env) == "https://github.com/me/bot/actions/runs/42"
    env["GITHUB_SERVER_URL"] = "https://ghe.example/"
    assert actor(env) == "https://ghe.example/me/bot/actions/runs/42"


def test_actor_elsewhere() -> None:
    expected = f"alice@{socket.gethostname()} pid {os.getpid()}"
    assert actor({"USER": "alice"}) == expected
    # Half a GitHub environment is not GitHub Actions.
    assert actor({"GITHUB_ACTIONS": "true", "LOGNAME": "alice"}) == expected
    assert actor({}).endswith(f"@{socket.gethostname()} pid {os.getpid()}")


# --- migrations_pattern -------------------------------------------------------------------


def test_migrations_pattern_from_wrangler_is_kept_relative_to_the_folder(tmp_path: Path) -> None:
    write(
        tmp_path / "wrangler.toml",
        '[[d1_databases]]\nbinding = "DB"\ndatabase_name = "d"\n'
        'migrations_dir = "./drizzle/"\nmigrations_pattern = "drizzle/*/migration.sql"\n',
    )
    s = run(tmp_path)
    assert (s.migrations_dir, s.migrations_pattern) == (tmp_path / "drizzle", "*/migration.sql")
    assert s.sources["migrations_pattern"] == "wrangler.toml d1_databases[0].migrations_pattern"
    assert run(
        tmp_path / "..", wrangler_config=f"{tmp_path.name}/wrangler.toml"
    ).migrations_pattern == ("*/migration.sql")


def test_migrations_pattern_defaults_to_wranglers(tmp_path: Path) -> None:
    s = run(tmp_path)
    assert (s.migrations_pattern, s.sources["migrations_pattern"]) == ("*.sql", "default")


def test_migrations_pattern_in_d1deploy_toml_beats_wrangler(tmp_path: Path) -> None:
    write(
        tmp_path / "wrangler.toml",
        '[[d1_databases]]\ndatabase_name = "d"\nmigrations_dir = "m"\n'
        'migrations_pattern = "m/*.sql"\n',
    )
    write(tmp_path / "d1deploy.toml", 'migrations_pattern = "./m/*/migration.sql"\n')
    s = run(tmp_path)
    assert (s.migrations_dir, s.migrations_pattern) == (tmp_path / "m", "*/migration.sql")
    assert s.sources["migrations_pattern"] == "d1deploy.toml"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('migrations_pattern = "migrations/*.sql"', "migrations_dir` is not"),
        (
            'migrations_dir = "db"\nmigrations_pattern = "migrations/*.sql"',
            "does not start with the migrations folder `db/`",
        ),
        ('migrations_dir = "db"\nmigrations_pattern = "db/@(a|b).sql"', "extglob"),
        ('migrations_dir = "db"\nmigrations_pattern = "db/[[:digit:]]*.sql"', "POSIX class"),
    ],
)
def test_migrations_pattern_wrangler_or_d1deploy_cannot_use(
    tmp_path: Path, entry: str, message: str
) -> None:
    write(tmp_path / "wrangler.toml", f'[[d1_databases]]\ndatabase_name = "d"\n{entry}\n')
    with pytest.raises(errors.ConfigFileError, match=re.escape(message)) as info:
        run(tmp_path)
    assert info.value.file == "wrangler.toml"
