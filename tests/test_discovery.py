"""Which files are migrations, in which order, and where their companions live
(d1deploy/discovery.py, d1deploy/layout.py). No database. The same rules are held to
real wrangler in tests/test_wrangler_interop.py."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from d1deploy import discovery, errors, layout
from d1deploy.discovery import discover, leading_number, migration_names, new_migration

SEED = Path(__file__).resolve().parent.parent / "migrations"


def write(folder: Path, name: str, text: str = "SELECT 1;\n") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def mdir(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    folder.mkdir()
    return folder


# --- the files wrangler applies, in its order --------------------------------------------


def test_every_top_level_sql_file_is_a_migration_in_wranglers_order(mdir: Path) -> None:
    for name in ("10_ten.sql", "9_nine.sql", "0001_one.sql", "extra.sql", "0005-hyphen.sql"):
        write(mdir, name)
    # Not migrations for wrangler: dot files, other extensions and cases, sub-folders,
    # and symbolic links (Node's readdir reports them as neither file nor folder).
    write(mdir, ".hidden.sql")
    write(mdir, "README.md", "docs")
    write(mdir, "schema.ts", "code")
    write(mdir, "UPPER.SQL")
    write(mdir, "sub/0002_nested.sql")
    (mdir / "0003_link.sql").symlink_to(mdir / "9_nine.sql")
    found = discover(mdir)
    assert [m.name for m in found] == [
        "0001_one.sql",
        "0005-hyphen.sql",  # parseInt("0005-hyphen.sql") is 5
        "9_nine.sql",
        "10_ten.sql",
        "extra.sql",  # no number: after every numbered one
    ]
    assert [m.number for m in found] == [1, 5, 9, 10, None]
    assert found[0].sha256 == hashlib.sha256(b"SELECT 1;\n").hexdigest()


def test_a_lone_numbered_rollback_is_an_ordinary_migration(mdir: Path) -> None:
    write(mdir, "0006_add.sql")
    write(mdir, "0007_rollback.sql", "DROP TABLE t;\n")
    found = discover(mdir)
    assert [m.name for m in found] == ["0006_add.sql", "0007_rollback.sql"]
    assert found[0].rollback_path is None


def test_migrations_sharing_a_number_run_in_name_order(mdir: Path) -> None:
    write(mdir, "1_b.sql")
    write(mdir, "001_a.sql")
    assert [m.name for m in discover(mdir)] == ["001_a.sql", "1_b.sql"]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        # Segment by segment, a shorter path (a prefix) first.
        (
            ["2_b/migration.sql", "10_a/migration.sql", "2_b"],
            ["2_b", "2_b/migration.sql", "10_a/migration.sql"],
        ),
        # JavaScript's parseInt: leading white space and a sign, digits only.
        ([" 3_x.sql", "-1_y.sql", "+2_z.sql"], ["-1_y.sql", "+2_z.sql", " 3_x.sql"]),
        # Names compare by UTF-16 code unit: an astral character before U+FFFD.
        (["a\ufffd.sql", "a\U0001f600.sql"], ["a\U0001f600.sql", "a\ufffd.sql"]),
    ],
)
def test_order_is_compare_migration_paths(names: list[str], expected: list[str]) -> None:
    assert sorted(names, key=discovery.sort_key) == expected


def test_leading_number_is_parse_int() -> None:
    assert [leading_number(n) for n in ("0007_x.sql", "12abc_x", "\u00a0 4_x", "x_1", "_1")] == [
        7,
        12,
        4,
        None,
        None,
    ]
    assert leading_number("9" * 400 + "_x.sql") is None  # Infinity: not a finite number


def test_a_nested_pattern_takes_migrations_from_folders(mdir: Path) -> None:
    write(mdir, "0002_b/migration.sql")
    write(mdir, "0001_a/migration.sql")
    write(mdir, "0001_a/rollback.sql", "DROP TABLE a;\n")
    write(mdir, "0001_a/snapshot.json", "{}")
    write(mdir, "loose.sql")  # not matched by the pattern: wrangler ignores it
    found = discover(mdir, "*/migration.sql")
    assert [m.name for m in found] == ["0001_a/migration.sql", "0002_b/migration.sql"]
    assert found[0].rollback_path == mdir / "0001_a" / "rollback.sql"
    assert discovery.resolve(found, "0002_b").name == "0002_b/migration.sql"


# --- companions ----------------------------------------------------------------------


def test_companions_live_in_a_folder_named_after_the_migration(mdir: Path) -> None:
    write(mdir, "0001_one.sql")
    for kind in ("rollback", "precheck", "verify"):
        write(mdir, f"0001_one/{kind}.sql")
    (found,) = discover(mdir)
    assert (found.rollback_path, found.precheck_path, found.verify_path) == (
        mdir / "0001_one" / "rollback.sql",
        mdir / "0001_one" / "precheck.sql",
        mdir / "0001_one" / "verify.sql",
    )


def test_the_seed_is_in_the_folder_layout() -> None:
    found = discover(SEED)
    assert [m.name for m in found] == ["000_base_schema.sql", "001_schema_enhancements.sql"]
    home = SEED / "001_schema_enhancements"
    assert found[1].rollback_path == home / "rollback.sql"
    assert found[1].precheck_path == home / "precheck.sql"
    assert found[1].verify_path == home / "verify.sql"
    assert migration_names(SEED) == [m.name for m in found]


def test_the_old_layout_is_refused_naming_every_file_and_the_command(mdir: Path) -> None:
    write(mdir, "001_a.sql")
    write(mdir, "001_rollback.sql")
    write(mdir, "002_b.sql")
    write(mdir, "002_b.verify.sql")
    write(mdir, "002_b.precheck.sql")
    with pytest.raises(errors.OldLayout) as info:
        discover(mdir)
    with pytest.raises(errors.OldLayout):
        new_migration(mdir, "next")  # a new one would be the only one in the new layout
    err = info.value
    assert err.exit_code == 2
    for old, new in (
        ("001_rollback.sql", "001_a/rollback.sql"),
        ("002_b.verify.sql", "002_b/verify.sql"),
        ("002_b.precheck.sql", "002_b/precheck.sql"),
    ):
        assert f"{old} (-> {new})" in err.message
    assert err.hint is not None and "`d1deploy move-companions`" in err.hint


@pytest.mark.parametrize(
    ("files", "pattern", "problem"),
    [
        ({"002_x/rollback.sql": "SELECT 1;"}, None, "there is no migration 002_x.sql"),
        (
            {"001_a.sql": "SELECT 1;", "001_a/rollback.sql": "SELECT 1;"},
            "**/*.sql",
            "wrangler would apply it as a migration",
        ),
        ({"005_empty.sql": "-- nothing here\n"}, None, "holds no SQL statement"),
    ],
)
def test_discovery_errors(
    mdir: Path, files: dict[str, str], pattern: str | None, problem: str
) -> None:
    for name, text in files.items():
        write(mdir, name, text)
    with pytest.raises(errors.InputError, match=problem) as info:
        discover(mdir, pattern)
    assert info.value.exit_code == 2 and info.value.file is not None


def test_discovery_refuses_binary_and_missing_directories(mdir: Path) -> None:
    (mdir / "001_db.sql").write_bytes(b"SQLite format 3\x00" + bytes(100))
    with pytest.raises(errors.InputError):
        discover(mdir)
    with pytest.raises(errors.InputError, match="does not exist"):
        discover(mdir / "nope")


def test_lint_warns_where_number_and_name_order_differ(mdir: Path) -> None:
    for name in ("9_nine.sql", "10_ten.sql", "11_eleven.sql"):
        write(mdir, name)
    (finding,) = discovery.order_findings(discover(mdir))
    assert finding.severity == "warning" and finding.code == "migration-order"
    assert finding.file == str(mdir / "10_ten.sql")
    assert "10_ten.sql runs after 9_nine.sql" in finding.message
    write(mdir, "9_nine.sql").rename(mdir / "09_nine.sql")
    assert discovery.order_findings(discover(mdir)) == []


# --- moving the old layout -----------------------------------------------------------------


def _old_project(mdir: Path) -> None:
    write(mdir, "001_a.sql")
    write(mdir, "001_rollback.sql", "DROP TABLE a;\n")
    write(mdir, "002_b.sql")
    write(mdir, "002_b.verify.sql", "SELECT 2;\n")


def test_move_companions_renames_outside_git(mdir: Path) -> None:
    _old_project(mdir)
    report = layout.move_companions(mdir)
    assert [(m.source.name, m.dest.relative_to(mdir).as_posix(), m.git) for m in report.moved] == [
        ("001_rollback.sql", "001_a/rollback.sql", False),
        ("002_b.verify.sql", "002_b/verify.sql", False),
    ]
    found = discover(mdir)
    assert found[0].rollback_text() == "DROP TABLE a;\n"
    assert found[1].verify_path == mdir / "002_b" / "verify.sql"
    assert layout.move_companions(mdir).moved == ()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_move_companions_uses_git_mv_for_tracked_files(tmp_path: Path, mdir: Path) -> None:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True
        ).stdout

    git("init", "-q")
    _old_project(mdir)
    git("add", "migrations/001_a.sql", "migrations/001_rollback.sql", "migrations/002_b.sql")
    git("-c", "user.name=t", "-c", "user.email=t@example.invalid", "commit", "-qm", "old")
    report = layout.move_companions(mdir)
    assert [m.git for m in report.moved] == [True, False]  # the verify file is untracked
    staged = git("status", "--porcelain").splitlines()
    assert "R  migrations/001_rollback.sql -> migrations/001_a/rollback.sql" in staged
    assert (mdir / "002_b" / "verify.sql").is_file()


def test_move_companions_changes_nothing_when_a_destination_exists(mdir: Path) -> None:
    _old_project(mdir)
    write(mdir, "002_b/verify.sql", "SELECT 'other';\n")
    with pytest.raises(errors.UsageError, match="already exists"):
        layout.move_companions(mdir)
    assert (mdir / "001_rollback.sql").is_file() and not (mdir / "001_a").exists()


def test_an_ambiguous_seed_rollback_is_named_and_left_alone(mdir: Path) -> None:
    write(mdir, "001_a.sql")
    write(mdir, "001_b.sql")
    write(mdir, "001_rollback.sql")
    with pytest.raises(errors.OldLayout, match="several migrations are numbered 1"):
        discover(mdir)
    with pytest.raises(errors.InputError, match=r"001_a\.sql, 001_b\.sql"):
        layout.move_companions(mdir)
    assert (mdir / "001_rollback.sql").is_file()


# --- new -----------------------------------------------------------------------------------


def test_new_creates_the_migration_and_its_folder(tmp_path: Path) -> None:
    folder = tmp_path / "fresh"
    paths = new_migration(folder, "create users")
    assert [p.relative_to(folder).as_posix() for p in paths] == [
        "0001_create_users.sql",
        "0001_create_users/rollback.sql",
        "0001_create_users/verify.sql",
    ]
    assert paths[0].read_text().startswith("-- Migration number: 0001 \t ")
    assert "-- expect:" in paths[2].read_text()
    assert migration_names(folder) == ["0001_create_users.sql"]
    assert new_migration(folder, "next one.sql")[0].name == "0002_next_one.sql"
    seed = tmp_path / "seed"
    shutil.copytree(SEED, seed)
    assert new_migration(seed, "add x")[0].name == "002_add_x.sql"
    for bad in ("a/b", ".hidden", " "):
        with pytest.raises(errors.UsageError):
            new_migration(folder, bad)


def test_new_follows_a_nested_pattern(mdir: Path) -> None:
    write(mdir, "0003_old/migration.sql")
    paths = new_migration(mdir, "add index", pattern="*/migration.sql")
    assert [p.relative_to(mdir).as_posix() for p in paths] == [
        "0004_add_index/migration.sql",
        "0004_add_index/rollback.sql",
        "0004_add_index/verify.sql",
    ]
    with pytest.raises(errors.UsageError, match="matches neither"):
        new_migration(mdir, "x", pattern="*/up.sql")
    with pytest.raises(errors.UsageError, match="would apply the companion files"):
        new_migration(mdir, "x", pattern="**/*.sql")
    assert migration_names(mdir, "*/migration.sql") == [
        "0003_old/migration.sql",
        "0004_add_index/migration.sql",
    ]
