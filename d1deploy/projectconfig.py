"""d1deploy's own config file: `d1deploy.toml`, or the `[tool.d1deploy]` table of
`pyproject.toml`, with `[env.NAME]` merged over its top level; every key known and
checked by kind, with the section each value came from.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d1deploy import configfile, errors

CONFIG_FILE_NAME = "d1deploy.toml"
PYPROJECT_FILE_NAME = "pyproject.toml"


def _is_text_list(value: object) -> bool:
    return isinstance(value, list) and all(configfile.is_text(v) for v in value)


KEYS: dict[str, tuple[Callable[[object], bool], str]] = {
    "database": (
        lambda v: configfile.is_text(v) or (_is_text_list(v) and bool(v)),
        "a string or an array of strings",
    ),
    "account_id": (configfile.is_text, "a non-empty string"),
    "migrations_dir": (configfile.is_text, "a non-empty string (a path)"),
    "migrations_table": (lambda v: isinstance(v, str), "a string"),
    "migrations_pattern": (
        configfile.is_text,
        "a non-empty string (a glob such as migrations/*.sql)",
    ),
    "local_path": (configfile.is_text, "a non-empty string (a path)"),
    "backup_dir": (configfile.is_text, "a non-empty string (a path)"),
    "lock_ttl_seconds": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
        "a positive integer (seconds)",
    ),
    "row_loss_guard_tables": (
        lambda v: _is_text_list(v) and bool(v),
        "a non-empty array of table names",
    ),
    "wrangler_config": (configfile.is_text, "a non-empty string (a path)"),
    "binding": (configfile.is_text, "a non-empty string"),
}


@dataclass(frozen=True)
class ProjectConfig:
    """A loaded d1deploy.toml (or [tool.d1deploy]), with [env.NAME] merged over the top."""

    file: Path | None = None
    label: str = ""
    values: Mapping[str, tuple[object, str]] = dataclasses.field(default_factory=dict)
    envs: frozenset[str] = frozenset()

    def value(self, key: str) -> tuple[object | None, str]:
        return self.values.get(key, (None, ""))

    def text(self, key: str) -> tuple[str | None, str]:
        value, source = self.value(key)
        return (value if isinstance(value, str) else None), source

    def path(self, key: str) -> tuple[Path | None, str]:
        value, source = self.text(key)
        if value is None or self.file is None:
            return None, ""
        return configfile.join(self.file.parent, value), source


def find(
    flag_path: str | None, cwd: Path, env_name: str | None, sources: dict[str, str]
) -> ProjectConfig:
    """The project config: `--config`'s file, else d1deploy.toml or pyproject.toml's
    [tool.d1deploy] in the working directory, else an empty one; `sources` gets where
    it was found."""
    if flag_path:
        path = configfile.join(cwd, flag_path)
        if not path.is_file():
            raise errors.ConfigFileError(
                f"config file {configfile.display(path, cwd)} does not exist",
                hint="check the --config path (relative paths start at the working directory)",
            )
        sources["config_file"] = "flag --config"
        return load(path, cwd, env_name, required_table=True)
    if (cwd / CONFIG_FILE_NAME).is_file():
        sources["config_file"] = "found in the working directory"
        return load(cwd / CONFIG_FILE_NAME, cwd, env_name, required_table=True)
    if (cwd / PYPROJECT_FILE_NAME).is_file():
        config = load(cwd / PYPROJECT_FILE_NAME, cwd, env_name, required_table=False)
        if config.file is not None:
            sources["config_file"] = "found in the working directory"
        return config
    return ProjectConfig()


def load(path: Path, cwd: Path, env_name: str | None, *, required_table: bool) -> ProjectConfig:
    label = configfile.display(path, cwd)
    data = configfile.parse_file(path, label)
    key_prefix, section = "", label
    if path.name == PYPROJECT_FILE_NAME:
        tool = data.get("tool")
        table = tool.get("d1deploy") if isinstance(tool, dict) else None
        if table is None and not required_table:
            return ProjectConfig()
        if not isinstance(table, dict):
            raise errors.ConfigFileError(
                "there is no [tool.d1deploy] table",
                file=label,
                hint="add a [tool.d1deploy] table, or point --config at a d1deploy.toml",
            )
        data, key_prefix, section = table, "tool.d1deploy.", f"{label} [tool.d1deploy]"

    envs = data.get("env", {})
    if not isinstance(envs, dict) or not all(isinstance(b, dict) for b in envs.values()):
        raise configfile.type_error(label, f"{key_prefix}env", "a table of [env.NAME] tables", envs)
    _check_keys(data, set(KEYS) | {"env"}, label, key_prefix)
    for name, block in envs.items():
        _check_keys(block, set(KEYS), label, f"{key_prefix}env.{name}.")

    values = {k: (v, section) for k, v in data.items() if k != "env"}
    if env_name in envs:
        env_section = (
            f"{label} [tool.d1deploy.env.{env_name}]" if key_prefix else f"{label} [env.{env_name}]"
        )
        values.update({k: (v, env_section) for k, v in envs[env_name].items()})
    return ProjectConfig(path, label, values, frozenset(envs))


def _check_keys(table: dict[str, Any], known: set[str], label: str, prefix: str) -> None:
    for key, value in table.items():
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise errors.ConfigFileError(
                f"unknown key `{prefix}{key}`",
                file=label,
                hint=f"{hint}known keys: {', '.join(sorted(known))}",
            )
        if key in KEYS:
            check, expected = KEYS[key]
            if not check(value):
                raise configfile.type_error(label, prefix + key, expected, value)
