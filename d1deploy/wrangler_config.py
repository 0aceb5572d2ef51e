"""The D1 part of wrangler's config (`wrangler.toml`, `wrangler.json`, `wrangler.jsonc`):
its `d1_databases` entries, layered by `[env.NAME]` as wrangler layers them, with the
source of each value, and wrangler's rules for `migrations_dir` and `migrations_pattern`.

`config.resolve` decides which file to read and where its values rank; this module reads
one file and says what it holds.
"""

from __future__ import annotations

import dataclasses
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from d1deploy import configfile, errors


@dataclass(frozen=True)
class WranglerEntry:
    """One `d1_databases[]` entry, with where it was found for the `sources` strings."""

    binding: str | None
    database_name: str | None
    database_id: str | None
    migrations_dir: tuple[Path | None, str]
    migrations_table: str | None
    migrations_pattern: tuple[str | None, str]
    default_migrations_dir: Path
    section: str  # "wrangler.toml [env.staging] d1_databases[0]"
    note: str  # " (top level; [env.staging] has no d1_databases)" or ""

    @property
    def database(self) -> str:
        # load refuses entries without either.
        return self.database_name or self.database_id or ""

    @property
    def where(self) -> str:
        return self.section + self.note

    def source(self, key: str) -> str:
        return f"{self.section}.{key}{self.note}"


@dataclass(frozen=True)
class Wrangler:
    path: Path
    label: str
    account_id: tuple[str | None, str]
    entries: tuple[WranglerEntry, ...]
    envs: frozenset[str]

    def select(
        self,
        requested: tuple[str, ...] | None,
        binding: tuple[str | None, str],
        config_label: str,
    ) -> WranglerEntry | None:
        """The entry for the requested database (by binding or name, first match wins, as
        wrangler does), else the one named by `binding` in d1deploy.toml, else the only one."""
        if requested:
            if len(requested) > 1:
                return None
            return next(
                (e for e in self.entries if requested[0] in (e.binding, e.database_name)), None
            )
        if binding[0] is not None:
            found = next((e for e in self.entries if e.binding == binding[0]), None)
            if found is None:
                known = ", ".join(e.binding for e in self.entries if e.binding) or "none"
                raise errors.ConfigFileError(
                    f"binding `{binding[0]}` ({binding[1]}) matches no d1_databases entry "
                    f"in {self.label}",
                    file=config_label,
                    hint=f"bindings in {self.label}: {known}",
                )
            return found
        return self.entries[0] if len(self.entries) == 1 else None


def load(path: Path, cwd: Path, env_name: str | None) -> Wrangler:
    label = configfile.display(path, cwd)
    data = configfile.parse_file(path, label)
    envs = data.get("env", {})
    if not isinstance(envs, dict):
        raise configfile.type_error(label, "env", "a table of environments", envs)
    block: dict[str, Any] | None = None
    if env_name is not None and env_name in envs:
        block = envs[env_name]
        if not isinstance(block, dict):
            raise configfile.type_error(label, f"env.{env_name}", "a table", block)

    def layered(key: str) -> tuple[object, str, str]:
        """(value, source, key path): the env block's value if it has one, else the top."""
        if block is not None and key in block:
            return block[key], f"{label} [env.{env_name}]", f"env.{env_name}.{key}"
        note = f" (top level; [env.{env_name}] has no {key})" if env_name else ""
        return data.get(key), f"{label}{note}", key

    account, account_source, account_key = layered("account_id")
    if account is not None and not configfile.is_text(account):
        raise configfile.type_error(label, account_key, "a non-empty string", account)

    raw_entries, entries_source, entries_key = layered("d1_databases")
    if raw_entries is None:
        raw_entries = []
    if not isinstance(raw_entries, list):
        raise configfile.type_error(label, entries_key, "an array of tables", raw_entries)
    # The note on a top-level fallback goes last: "wrangler.toml d1_databases[0] (top ...)".
    section, paren, note = entries_source.partition(" (")
    entries = []
    for index, raw in enumerate(raw_entries):
        key = f"{entries_key}[{index}]"
        if not isinstance(raw, dict):
            raise configfile.type_error(label, key, "a table", raw)
        fields: dict[str, str | None] = {}
        for name in (
            "binding",
            "database_name",
            "database_id",
            "migrations_dir",
            "migrations_pattern",
        ):
            value = raw.get(name)
            if value is not None and not configfile.is_text(value):
                raise configfile.type_error(label, f"{key}.{name}", "a non-empty string", value)
            fields[name] = value
        table = raw.get("migrations_table")
        if table is not None and not isinstance(table, str):
            raise configfile.type_error(label, f"{key}.migrations_table", "a string", table)
        if not (fields["database_name"] or fields["database_id"]):
            raise errors.ConfigFileError(
                f"`{key}` has neither database_name nor database_id",
                file=label,
                hint="add database_name (and database_id) to the entry",
            )
        entry = WranglerEntry(
            binding=fields["binding"],
            database_name=fields["database_name"],
            database_id=fields["database_id"],
            migrations_dir=(None, ""),
            migrations_table=table,
            migrations_pattern=(None, ""),
            default_migrations_dir=path.parent / "migrations",
            section=f"{section} d1_databases[{index}]",
            note=paren + note,
        )
        if fields["migrations_pattern"]:
            entry = dataclasses.replace(
                entry,
                migrations_pattern=(
                    entry_pattern(
                        fields["migrations_pattern"], fields["migrations_dir"], label, key
                    ),
                    entry.source("migrations_pattern"),
                ),
            )
        if fields["migrations_dir"]:
            entry = dataclasses.replace(
                entry,
                migrations_dir=(
                    configfile.join(path.parent, relpath(fields["migrations_dir"])),
                    entry.source("migrations_dir"),
                ),
            )
        entries.append(entry)
    return Wrangler(
        path=path,
        label=label,
        account_id=(account if isinstance(account, str) else None, account_source),
        entries=tuple(entries),
        envs=frozenset(envs),
    )


def entry_pattern(pattern: str, raw_dir: str | None, label: str, key: str) -> str:
    """A binding's `migrations_pattern`, relative to its `migrations_dir`, held to
    wrangler's rules (`resolveMigrationsConfig`): the folder must be set, the pattern must
    start with it."""
    if raw_dir is None:
        raise errors.ConfigFileError(
            f"`{key}.migrations_pattern` is set but `{key}.migrations_dir` is not "
            "(wrangler refuses this too)",
            file=label,
            hint='add migrations_dir to the entry, for example migrations_dir = "migrations"',
        )
    folder = relpath(posixpath.normpath(raw_dir.replace("\\", "/")))
    return pattern_in(pattern, folder, label, f"{key}.migrations_pattern")


def pattern_in(pattern: str, folder: str, label: str, key: str) -> str:
    from d1deploy import discovery

    normal = relpath(posixpath.normpath(pattern.replace("\\", "/")))
    if folder == ".":
        relative = normal
    elif normal.startswith(folder + "/"):
        relative = normal[len(folder) + 1 :]
    else:
        raise errors.ConfigFileError(
            f"`{key}` = {pattern!r} does not start with the migrations folder `{folder}/`",
            file=label,
            hint=f"write it from the migrations folder, for example `{folder}/*/migration.sql`",
        )
    why = discovery.check_pattern(relative)
    if why:
        raise errors.ConfigFileError(
            f"cannot use `{key}` = {pattern!r}: {why}",
            file=label,
            hint="use `*`, `?`, `[...]`, `**` and `{a,b}`, "
            "for example `migrations/*/migration.sql`",
        )
    return relative


def relpath(value: str) -> str:
    """Normalise a migrations_dir as wrangler does: `\\` -> `/`, no `./` prefix, no trailing `/`."""
    value = value.replace("\\", "/")
    if value.startswith("./"):
        value = value[2:]
    return value.rstrip("/") or "."
