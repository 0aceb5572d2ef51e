"""d1deploy and the real wrangler take turns on the same project and database.

The promise is that a project moves between `wrangler d1 migrations apply` and d1deploy
and back without re-running anything: the same files are migrations (and nothing else),
in the same order, under the same names in the same ledger. Each scenario runs the pinned
wrangler (tests/realtools.py) against the emulator on 127.0.0.1 (`remote`) and locally on
workerd (`local`, D1's engine, whose database file is in `.wrangler/state/`; d1deploy
works on that same file with `--local=PATH`). After every step `wrangler d1 migrations
list` (or the list `apply` prints before it applies) must agree with `d1deploy status`,
and the database is judged from its SQLite file.

Each wrangler call costs seconds, so every scenario makes as few as it can.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from d1deploy import config, defaults, discovery, ledger
from tests import realtools
from tests.e2e.states import fingerprint
from tests.emulator import D1Emulator, ServedEmulator
from tests.helpers import d1deploy_executable

pytestmark = pytest.mark.wrangler

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "migrations"
M000, M001 = "000_base_schema.sql", "001_schema_enhancements.sql"
TARGETS = [
    pytest.param("remote", id="remote"),
    pytest.param("local", id="local", marks=pytest.mark.workerd),
]


def wrangler_local_file(project: Path, database_id: str) -> Path:
    """Where `wrangler d1 ... --local` keeps a database: miniflare names a Durable
    Object's file after `idFromName(database_id)` in the D1 namespace
    (`durableObjectNamespaceIdFromName` in miniflare)."""
    key = hashlib.sha256(b"miniflare-D1DatabaseObject").digest()
    name = hmac.new(key, database_id.encode(), hashlib.sha256).digest()[:16]
    check = hmac.new(key, name, hashlib.sha256).digest()[:16]
    folder = project / ".wrangler" / "state" / "v3" / "d1" / "miniflare-D1DatabaseObject"
    return folder / f"{(name + check).hex()}.sqlite"


def listed_names(output: str) -> list[str]:
    """The migration names in the table `wrangler d1 migrations list|apply` prints first
    ("Migrations to be applied"); none after "No migrations to apply"."""
    names: list[str] = []
    for line in output.splitlines():
        if line.startswith("└") and names:
            break  # the end of the first table
        if line.startswith("│"):
            cell = line.split("│")[1].strip()
            if cell.lower() != "name":
                names.append(cell)
    return names


@dataclass
class Project:
    """A folder with wrangler.toml, and the database each binding names, remote or local."""

    root: Path
    wrangler: realtools.Wrangler
    served: ServedEmulator | None
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return "--remote" if self.served else "--local"

    def env(self) -> dict[str, str]:
        if self.served is None:
            return {}
        emu = self.served.emulator
        return {
            "CLOUDFLARE_API_TOKEN": emu.token,
            "CLOUDFLARE_ACCOUNT_ID": emu.account_id,
            "CLOUDFLARE_API_BASE_URL": self.served.base_url,
        }

    def bind(self, binding: str, extra: str = "") -> None:
        """A d1_databases entry for `binding`: a new database of the emulator (remote) or
        a new id (local)."""
        name = f"{binding.lower()}-{uuid.uuid4().hex[:8]}"
        ident = (
            self.served.emulator.create_database(name).uuid if self.served else str(uuid.uuid4())
        )
        self.ids[binding] = ident
        with (self.root / "wrangler.toml").open("a", encoding="utf-8") as fh:
            fh.write(
                f'\n[[d1_databases]]\nbinding = "{binding}"\ndatabase_name = "{name}"\n'
                f'database_id = "{ident}"\n{extra}'
            )

    def db_file(self, binding: str = "DB") -> Path:
        ident = self.ids[binding]
        if self.served:
            return self.served.emulator.db_path(ident)
        return wrangler_local_file(self.root, ident)

    # -- the two tools
    def wrangler_apply(self, binding: str = "DB") -> list[str]:
        """`wrangler d1 migrations apply`; the names it said it would apply."""
        done = self.wrangler.run(
            ["d1", "migrations", "apply", binding, self.where], cwd=self.root, env=self.env()
        )
        return listed_names(done.stdout)

    def wrangler_pending(self, binding: str = "DB") -> list[str]:
        done = self.wrangler.run(
            ["d1", "migrations", "list", binding, self.where], cwd=self.root, env=self.env()
        )
        return listed_names(done.stdout)

    def d1deploy(
        self, *args: str, binding: str = "DB", database: bool = True, code: int = 0
    ) -> subprocess.CompletedProcess[str]:
        """`d1deploy ARGS -d BINDING` (the binding picks the wrangler entry, hence the
        migrations folder), on the database file wrangler uses locally."""
        target = ["-d", binding]
        if database and self.served is None:
            target.append(f"--local={self.db_file(binding)}")
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("CLOUDFLARE_", "D1DEPLOY_"))
        }
        done = subprocess.run(
            [d1deploy_executable(), *args, *target],
            cwd=self.root,
            env={**env, **self.env(), "NO_COLOR": "1"},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == code, f"d1deploy {args} -> {done.returncode}\n{done.stderr}"
        return done

    def status(self, binding: str = "DB") -> dict[str, list[str]]:
        payload = json.loads(self.d1deploy("status", "--json", binding=binding).stdout)
        return {k: payload[k] for k in ("applied", "pending", "missing", "out_of_order")}

    # -- the database, from its file
    def ledger(self, binding: str = "DB") -> list[str]:
        with closing(self.db_file(binding)) as con:
            return [r[0] for r in con.execute("SELECT name FROM d1_migrations ORDER BY id")]

    def ledger_sql(self, binding: str = "DB") -> str:
        with closing(self.db_file(binding)) as con:
            (sql,) = con.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'd1_migrations'"
            ).fetchone()
            return str(sql)

    def schema(self, binding: str = "DB") -> object:
        with closing(self.db_file(binding)) as con:
            return fingerprint(con)


class closing:
    """A read connection to a database file that wrangler or d1deploy may write next."""

    def __init__(self, path: Path) -> None:
        self.con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)

    def __enter__(self) -> sqlite3.Connection:
        return self.con

    def __exit__(self, *exc: object) -> None:
        self.con.close()


def expected_schema(*files: Path) -> object:
    """The schema plain SQLite makes of these files, run in order (never d1deploy)."""
    con = sqlite3.connect(":memory:")
    try:
        for path in files:
            con.executescript(path.read_text(encoding="utf-8"))
        return fingerprint(con)
    finally:
        con.close()


def stored_ledger_ddl() -> str:
    """d1deploy's ledger DDL as SQLite stores it in sqlite_master."""
    con = sqlite3.connect(":memory:")
    try:
        con.execute(ledger.create_ledger_sql(defaults.MIGRATIONS_TABLE))
        (sql,) = con.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'd1_migrations'"
        ).fetchone()
        return str(sql)
    finally:
        con.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedEmulator]:
    """One emulator on 127.0.0.1 for the module; each project makes its own databases."""
    emu = D1Emulator(tmp_path_factory.mktemp("interop-emulator"))
    with emu.serve() as base_url:
        yield ServedEmulator(base_url, emu)
    emu.close()


@pytest.fixture
def project(
    request: pytest.FixtureRequest, tmp_path: Path, wrangler: realtools.Wrangler
) -> Project:
    target = request.param
    served = request.getfixturevalue("served") if target == "remote" else None
    root = tmp_path / "project"
    root.mkdir()
    (root / "wrangler.toml").write_text('name = "bot"\ncompatibility_date = "2025-01-01"\n')
    return Project(root, wrangler, served)


def seed_project(project: Project) -> None:
    """This repository's migrations/, as it is (README and companion folders included)."""
    shutil.copytree(SEED, project.root / "migrations")
    project.bind("DB")


# --- this repository ------------------------------------------------------------------------


@pytest.mark.parametrize("project", TARGETS, indirect=True)
def test_this_repository_applied_by_wrangler_gives_exactly_its_migrations(
    project: Project,
) -> None:
    seed_project(project)
    assert project.wrangler_apply() == [M000, M001]  # nothing else was about to run
    assert project.ledger() == [M000, M001]
    assert project.schema() == expected_schema(SEED / M000, SEED / M001)
    # wrangler made the ledger; d1deploy's DDL is byte for byte the same.
    assert project.ledger_sql() == stored_ledger_ddl()
    assert project.wrangler_pending() == [] == project.status()["pending"]
    assert project.status()["applied"] == [M000, M001]
    project.d1deploy("verify")  # the seed's checks hold on what wrangler applied


@pytest.mark.parametrize("project", TARGETS, indirect=True)
def test_wrangler_applies_part_and_d1deploy_continues(project: Project) -> None:
    seed_project(project)
    later = project.root / "later"
    later.mkdir()
    for name in (M001, M001.removesuffix(".sql")):
        (project.root / "migrations" / name).rename(later / name)
    assert project.wrangler_apply() == [M000]
    for path in later.iterdir():
        path.rename(project.root / "migrations" / path.name)
    assert project.wrangler_pending() == [M001] == project.status()["pending"]

    project.d1deploy("migrate", "--no-backup")

    assert project.ledger() == [M000, M001]
    assert project.schema() == expected_schema(SEED / M000, SEED / M001)
    assert project.wrangler_pending() == [] == project.status()["pending"]


@pytest.mark.parametrize("project", TARGETS, indirect=True)
def test_d1deploy_applies_part_and_wrangler_continues(project: Project) -> None:
    seed_project(project)
    # Locally d1deploy creates the very file wrangler then opens.
    project.d1deploy("migrate", "--no-backup", "--to", "000_base_schema")
    assert project.ledger() == [M000]
    assert project.ledger_sql() == stored_ledger_ddl()
    assert project.status()["pending"] == [M001]

    assert project.wrangler_apply() == [M001]  # the companions are not migrations

    assert project.ledger() == [M000, M001]
    assert project.schema() == expected_schema(SEED / M000, SEED / M001)
    assert project.wrangler_pending() == [] == project.status()["pending"]
    status = project.status()
    assert status["applied"] == [M000, M001] and status["missing"] == []


# --- projects made by `d1deploy new` --------------------------------------------------------


def new_project(project: Project, binding: str, folder: str, pattern: str | None) -> list[str]:
    """Two migrations made by `d1deploy new`, each with a rollback that would drop what it
    made and a verify file whose probe would fail if wrangler ran it as SQL."""
    extra = f'migrations_dir = "{folder}"\n'
    if pattern:
        extra += f'migrations_pattern = "{folder}/{pattern}"\n'
    project.bind(binding, extra)
    names = []
    for what, sql, table in (
        ("create notes", "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);", "notes"),
        ("create tags", "CREATE TABLE tags (id INTEGER PRIMARY KEY, note_id INTEGER);", "tags"),
    ):
        created = project.d1deploy("new", what, binding=binding, database=False).stdout.split()
        migration, rollback, verify = (Path(p) for p in created)
        migration.write_text(migration.read_text() + sql + "\n")
        rollback.write_text(f"DROP TABLE {table};\n")
        verify.write_text(
            f"-- check: {table} exists\n-- expect: value = 1\n"
            f"SELECT count(*) FROM sqlite_master WHERE name = '{table}';\n"
            f"-- expect: error\nINSERT INTO {table} (id) VALUES (NULL), (1), (1);\n"
        )
        names.append(migration.relative_to(project.root / folder).as_posix())
    return names


@pytest.mark.parametrize("project", TARGETS, indirect=True)
def test_wrangler_applies_only_the_migrations_of_a_project_made_by_d1deploy_new(
    project: Project,
) -> None:
    flat = new_project(project, "FLAT", "migrations", None)
    nested = new_project(project, "NESTED", "drizzle", "*/migration.sql")
    assert flat == ["0001_create_notes.sql", "0002_create_tags.sql"]
    assert nested == ["0001_create_notes/migration.sql", "0002_create_tags/migration.sql"]
    for binding, names in (("FLAT", flat), ("NESTED", nested)):
        if project.served is None:
            # Nothing made wrangler's local file yet; a status never makes it either.
            missing = project.d1deploy("status", binding=binding, code=3)
            assert "does not exist" in missing.stderr and not project.db_file(binding).exists()
            assert project.wrangler_pending(binding) == names  # wrangler makes it
        assert project.status(binding)["pending"] == names
        assert project.wrangler_apply(binding) == names
        assert project.ledger(binding) == names
        with closing(project.db_file(binding)) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
            assert {"notes", "tags"} <= tables
            assert con.execute("SELECT count(*) FROM tags").fetchone() == (0,)
        status = project.status(binding)
        assert status["applied"] == names and status["pending"] == []
        project.d1deploy("verify", binding=binding)


# --- the same files, the same order ---------------------------------------------------------

PATTERNS = {
    "DEFAULT": None,
    "NESTED": "*/migration.sql",
    "DEEP": "**/*.sql",
    "BRACES": "{[0-9]*,extra}.sql",
}


@pytest.mark.workerd
def test_wrangler_and_d1deploy_list_the_same_files_in_the_same_order(
    tmp_path: Path, wrangler: realtools.Wrangler
) -> None:
    root = tmp_path / "project"
    folder = root / "migrations"
    files = [
        "0001_one.sql",
        "9_nine.sql",
        "10_ten.sql",
        "0005-hyphen.sql",
        "+4_plus.sql",
        "0007_rollback.sql",
        "extra.sql",
        "zeta.sql",
        "Ünïcode_ß.sql",
        ".hidden.sql",
        "UPPER.SQL",
        "notes.txt",
        "0002_two/migration.sql",
        "0002_two/rollback.sql",
        "10_a/migration.sql",
        "3_b/migration.sql",
        ".dot/migration.sql",
        "sub/deeper/0008_deep.sql",
    ]
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("SELECT 1;\n")
    (folder / "0003_link.sql").symlink_to(folder / "0001_one.sql")
    project = Project(root, wrangler, None)
    (root / "wrangler.toml").write_text('name = "bot"\n')
    for binding, pattern in PATTERNS.items():
        project.bind(
            binding,
            'migrations_dir = "migrations"\n'
            + (f'migrations_pattern = "migrations/{pattern}"\n' if pattern else ""),
        )
    for binding in PATTERNS:
        settings = config.resolve(flags={"database": [binding]}, environ={}, cwd=root)
        ours = discovery.migration_names(settings.migrations_dir, settings.migrations_pattern)
        assert project.wrangler_pending(binding) == ours, binding
