"""`Run`: one command invocation. Its shared options as typed `config.Flags`, its printer,
the settings and `Project` resolved once from them, and the database it works on (a
local file or a D1 database through one client), plus the confirmation prompt.

Fleet mode lives in `fleetrun.py`, the backup taken before a change in `backups.py`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from d1deploy.errors import ConfirmationRequired, D1DeployError, NotFound, UsageError

if TYPE_CHECKING:
    from d1deploy import suggest
    from d1deploy.backend import Backend
    from d1deploy.cli.output import Output
    from d1deploy.client import D1Client
    from d1deploy.config import Flags, Settings
    from d1deploy.project import Project


class Run:
    """One command invocation: its shared options, its printer, its settings."""

    def __init__(self, command: str, common: Mapping[str, Any], output: Output) -> None:
        from d1deploy.config import Flags

        self.command = command
        self.common = common
        self.out = output
        self.yes = bool(common.get("yes", False))
        self.flags: Flags = Flags(
            database=tuple(common.get("database") or ()),
            databases_matching=common.get("databases_matching"),
            local=common.get("local"),
            account_id=common.get("account_id"),
            env=common.get("env"),
            config=common.get("config"),
            migrations_dir=common.get("migrations_dir"),
            migrations_table=common.get("migrations_table"),
            backup_dir=common.get("backup_dir"),
        )
        self._settings: Settings | None = None
        self._project: Project | None = None

    @property
    def settings(self) -> Settings:
        """Flag > env > config files > defaults, shown with -v."""
        if self._settings is None:
            from d1deploy import config, suggest

            self._settings = config.resolve(flags=self.flags, environ=os.environ, cwd=Path.cwd())
            for key, value, source in self._settings.describe():
                self.out.detail(f"  {key:<18} {value}  ({source})")
            suggest.use(self.target(self._settings))
        return self._settings

    @property
    def project(self) -> Project:
        """What the engine needs of the settings, with this run's actor and printer."""
        if self._project is None:
            from d1deploy.project import Project

            self._project = Project.from_settings(
                self.settings, environ=os.environ, notify=self.out.info
            )
        return self._project

    def target(self, cfg: Settings) -> suggest.Target:
        """The options that point a suggested command at what this run works on: the
        database (the `-d` given, else the one configured; or `--local=PATH`), the
        account and project options given as flags."""
        from d1deploy import suggest

        f = self.flags
        project: list[str] = []
        for option, value in (
            ("--env", f.env),
            ("--config", f.config),
            ("--migrations-dir", f.migrations_dir),
            ("--migrations-table", f.migrations_table),
        ):
            if value:
                project += [option, str(value)]
        given = f.database
        entry = ("-d", given[0]) if len(given) == 1 else ()
        if cfg.local_path is not None:
            path = cfg.local_path
            with contextlib.suppress(ValueError):
                path = path.relative_to(Path.cwd())
            return suggest.Target((f"--local={path}", *entry), (), tuple(project), entry)
        name = given[0] if len(given) == 1 else cfg.database
        account = ("--account-id", f.account_id) if f.account_id else ()
        return suggest.Target(("-d", name) if name else (), account, tuple(project), entry)

    def client(self, **shared: Any) -> D1Client:
        """`shared`: the fleet's `transport`, shared by every database."""
        from d1deploy.client import D1Client

        token, account = self.settings.require_remote()
        self.out.add_secret(token)
        return D1Client(
            token=token,
            account_id=account,
            base_url=self.settings.api_base_url,
            on_retry=self.out.info,
            **shared,
        )

    @property
    def is_fleet(self) -> bool:
        return self.settings.is_fleet

    @contextmanager
    def backend(self, *, create: bool = False) -> Iterator[Backend]:
        """The database the command works on: a local file, or a D1 database. A missing
        local file is created only when `create` (a command that writes)."""
        cfg = self.settings
        if cfg.local_path is not None:
            from d1deploy.local import LocalBackend

            self.refuse_migration_as_file(cfg.local_path)
            try:
                local = LocalBackend(cfg.local_path, create=create)
            except NotFound as err:
                err.message = (
                    f"the local database {cfg.local_path} does not exist, and this command"
                    " only reads it: nothing was created"
                )
                raise
            self.out.detail(f"Using local database {cfg.local_path}")
            try:
                yield local
            except BaseException:
                local.discard_if_created_empty()
                raise
            local.close()
            return
        database = cfg.require_database()
        from d1deploy.remote import RemoteBackend

        client = self.client()
        try:
            info = client.resolve_database(cfg.database_id or database)
            cfg.refuse_mismatch(info.name)
            self.out.detail(f"Using D1 database {info.name} ({info.uuid})")
            yield RemoteBackend(client, info)
        finally:
            client.close()

    def refuse_migration_as_file(self, path: Path) -> None:
        """`verify --local 001_x` takes `001_x` as the file: when a missing file is named
        like a migration, say how to give both."""
        if path.exists():
            return
        from d1deploy import discovery

        try:
            found = discovery.discover(
                self.settings.migrations_dir, self.settings.migrations_pattern
            )
        except D1DeployError:
            return
        names = {m.name for m in found} | {m.name.removesuffix(".sql") for m in found}
        if path.name not in names:
            return
        raise UsageError(
            f"--local took {path.name!r} as the database file, but that is a migration's"
            " name and no such file exists",
            hint=f"--local's value is the file: write `--local=PATH {path.name}`, or"
            f" `--local= {path.name}` for the default file",
        )

    def confirm(self, question: str) -> None:
        """Ask before a destructive step; without a terminal only --yes proceeds."""
        if self.yes:
            return
        if not sys.stdin.isatty():
            raise ConfirmationRequired(
                f"refusing without confirmation: {question}",
                hint="run it in a terminal to be asked, or pass --yes",
            )
        import click

        if not click.confirm(question, default=False, err=True):
            raise click.exceptions.Exit(1)
