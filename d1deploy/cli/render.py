"""How each command's report looks: for people, as JSON, and in GitHub Actions.

Every function takes the `Output` (the only writer) and a core report. Data a user
asked for (query results, lists) goes to stdout; narration goes to stderr; `--json`
prints the report as one object; in GitHub Actions a Markdown summary and step outputs
are written too.

Longer than 500 lines because it holds one short function per report (and the
`describe_*` line of each in a fleet) beside the helpers they share (checks, schema
differences, failures); what a report says is found by its name here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from d1deploy import suggest
from d1deploy.cli.output import Output, cell, md_escape, md_table
from d1deploy.errors import D1DeployError

if TYPE_CHECKING:
    from d1deploy.backend import DatabaseInfo, RestoreResult
    from d1deploy.backups import BackupResult
    from d1deploy.checks import CheckResult
    from d1deploy.fleet import FleetReport
    from d1deploy.layout import MoveReport
    from d1deploy.lint import Finding
    from d1deploy.lock import Lease
    from d1deploy.migrations import (
        BaselineReport,
        MigrateReport,
        PlanReport,
        RollbackReport,
        StatusReport,
        VerifyReport,
    )
    from d1deploy.rehearse import RehearsalReport
    from d1deploy.restoring import RestoreFromBackupResult, RestorePoint
    from d1deploy.schema import SchemaCheck
    from d1deploy.sqlexec import ExecReport


def _where(file: str, line: int | None) -> str:
    """file:line, relative to the working directory when the file is below it."""
    path = Path(file)
    if path.is_absolute():
        with contextlib.suppress(ValueError):
            path = path.relative_to(Path.cwd())
    return f"{path}:{line}" if line is not None else str(path)


def _shorten(sql: str, width: int = 60) -> str:
    one_line = " ".join(sql.split())
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


# -- failures -----------------------------------------------------------------------------
def failure(out: Output, err: D1DeployError) -> None:
    """Show what a failed command found before its error line, and write its report to
    GitHub's step outputs and summary (`--json` carries the report inside the error
    object, which replaces the one rendered here); the schema's differences also go to
    the step summary."""
    schema_drift(out, getattr(err, "schema", None))
    report = err.report
    results = getattr(err, "results", None)
    findings = getattr(err, "findings", None)
    from d1deploy.migrations import BaselineReport, MigrateReport, RollbackReport
    from d1deploy.rehearse import RehearsalReport

    if isinstance(report, MigrateReport):
        migrate(out, report)
    elif isinstance(report, RollbackReport):
        rollback(out, report)
    elif isinstance(report, BaselineReport):
        baseline(out, report)
    elif isinstance(report, RehearsalReport):
        rehearsal(out, report)
    elif out.json_mode:
        return
    elif results:
        checks(out, results, title="Prechecks")
    elif findings:
        lint_findings(out, findings, checked=None)


# -- checks ----------------------------------------------------------------------------------
def checks(out: Output, results: Sequence[CheckResult], *, title: str) -> None:
    """A compact table of checks, then the offending rows of each failed one (people);
    the step summary gets the table in every mode."""
    if not results:
        return
    _checks_summary(out, results, title)
    if out.json_mode:
        return
    out.info(f"{title}:")
    for r in results:
        mark = "ok  " if r.ok else "FAIL" if r.judged else "wait"
        probe = f" [{r.probe} probe]" if r.probe else ""
        out.info(
            f"  {mark} {r.check.label} ({_where(r.check.file, r.check.line)}) expect "
            f"{r.check.expect.describe()}: {r.outcome}{probe}"
        )
        if not r.ok and r.rows:
            out.info("       offending rows (first 10):")
            width = [
                max(len(str(c)), *(len(cell(row[i])) for row in r.rows))
                for i, c in enumerate(r.columns)
            ]
            out.info(
                "       " + "  ".join(c.ljust(w) for c, w in zip(r.columns, width, strict=True))
            )
            for row in r.rows:
                out.info(
                    "       " + "  ".join(cell(v).ljust(w) for v, w in zip(row, width, strict=True))
                )


def _checks_summary(out: Output, results: Sequence[CheckResult], title: str) -> None:
    if not results:
        return
    passed = sum(r.ok for r in results)
    waiting = sum(not r.judged for r in results)
    later = f", {waiting} judged at deploy time" if waiting else ""
    out.summary(
        f"#### {title}: {passed}/{len(results)} passed{later}\n\n"
        + md_table(
            ["", "check", "where", "expect", "outcome"],
            [
                [
                    "✅" if r.ok else "❌" if r.judged else "⏳",
                    r.check.label,
                    _where(r.check.file, r.check.line),
                    r.check.expect.describe(),
                    r.outcome,
                ]
                for r in results
            ],
        )
    )


# -- foundation commands -----------------------------------------------------------------------
def databases(out: Output, found: Sequence[DatabaseInfo]) -> None:
    if out.json_mode:
        out.json({"ok": True, "databases": list(found)})
        return
    out.table(
        ["name", "uuid", "created_at", "version"],
        [[d.name, d.uuid, d.created_at or "", d.version or ""] for d in found],
    )
    out.info(f"{len(found)} database(s)")


def exec_report(out: Output, report: ExecReport) -> None:
    if out.json_mode:
        out.json(
            {
                "ok": True,
                "database": report.database,
                "mode": report.mode,
                "results": [
                    {
                        "sql": s.sql,
                        "line": s.line,
                        "results": s.result.as_dicts(),
                        "meta": {
                            "changes": s.result.changes,
                            "rows_read": s.result.rows_read,
                            "rows_written": s.result.rows_written,
                            "duration_ms": s.result.duration_ms,
                            "last_row_id": s.result.last_row_id,
                        },
                    }
                    for s in report.statements
                ],
                "import": report.imported,
            }
        )
        return
    for outcome in report.statements:
        if outcome.result.columns:
            if len(report.statements) > 1:
                out.info(f"-- {_shorten(outcome.sql)}")
            out.table(outcome.result.columns, outcome.result.rows)
    if report.imported is not None:
        imp = report.imported
        out.info(
            f"Imported {imp.num_queries} queries in {imp.duration_ms:.0f} ms "
            f"({imp.rows_read} rows read, {imp.rows_written} rows written)."
        )
        if imp.final_bookmark:
            out.info(f"Database is now at bookmark {imp.final_bookmark}")
        return
    out.info(
        f"Executed {len(report.statements)} statement(s) on {report.database} in "
        f"{report.duration_ms:.1f} ms ({report.rows_read} rows read, "
        f"{report.rows_written} rows written)."
    )


def lint_findings(out: Output, findings: Sequence[Finding], *, checked: int | None) -> None:
    errors = sum(f.severity == "error" for f in findings)
    notes = sum(f.severity == "note" for f in findings)
    if out.json_mode:
        out.json({"ok": errors == 0, "files": checked, "findings": list(findings)})
        return
    for f in findings:
        where = f"{f.location}: " if f.location else ""
        out.info(f"{where}{f.severity}: {f.message} [{f.code}]")
        if f.hint:
            out.info(f"  hint: {f.hint}")
        level = "notice" if f.severity == "note" else f.severity
        out.annotate(level, f.message, file=f.file, line=f.line)
    if checked is not None:
        warnings = len(findings) - errors - notes
        out.info(
            f"{checked} file(s) checked: {errors} error(s), {warnings} warning(s)"
            + (f", {notes} note(s)." if notes else ".")
        )
    if findings:
        out.summary(
            "#### Lint\n\n"
            + md_table(
                ["where", "severity", "finding"],
                [[f.location or "", f.severity, f.message] for f in findings],
            )
        )


# -- the engine ------------------------------------------------------------------------------
def status(out: Output, report: StatusReport) -> None:
    rows = []
    for m in report.migrations:
        notes = [n for n, on in (("drifted", m.drifted), ("out of order", m.out_of_order)) if on]
        rows.append(
            [m.name, m.state + (f" ({', '.join(notes)})" if notes else ""), m.applied_at or ""]
        )
    out.outputs(
        {
            "pending": len(report.pending),
            "pending_names": list(report.pending),
            "schema_drift": len(report.schema_drift),
        }
    )
    out.summary(
        f"### d1deploy status: {report.database}\n\n"
        + md_table(["migration", "state", "applied_at"], rows)
    )
    if out.json_mode:
        schema_drift(out, report.schema, adopt=True)
        out.json(
            {
                "ok": not report.drifted and not report.schema_drift,
                "database": report.database,
                "applied": report.applied,
                "pending": report.pending,
                "drifted": report.drifted,
                "missing": report.missing,
                "out_of_order": report.out_of_order,
                "migrations": report.migrations,
                "schema": schema_json(report.schema),
            }
        )
        return
    out.table(["migration", "state", "applied_at"], rows)
    out.info(
        f"{report.database}: {len(report.applied)} applied, {len(report.pending)} pending, "
        f"{len(report.drifted)} drifted, {len(report.missing)} missing, "
        f"{len(report.out_of_order)} out of order."
    )
    schema_drift(out, report.schema, adopt=True)


def schema_drift(out: Output, check: SchemaCheck | None, *, adopt: bool = False) -> None:
    """Each object that differs from what the migrations leave, with both definitions,
    and (`adopt`) the baseline that adopts the live schema when one does; a refusal's
    hint says that already. People get it on stderr; the step summary in every mode."""
    from d1deploy.schema import adoption

    if check is None:
        return
    adopting = adoption(check) if adopt else None
    if not check.compared:
        out.summary(f"Schema not compared: {check.reason}")
        if not out.json_mode:
            out.info(f"Schema not compared: {check.reason}")
        return
    if not check.drifted:
        return
    head = f"{len(check.differences)} object(s) differ from what the applied migrations leave"
    rows = [
        [f"{d.type} {d.name}", d.change, "; ".join(d.details), _code(d.expected), _code(d.live)]
        for d in check.differences
    ]
    out.summary(
        f"#### Schema drift: {head}\n\n"
        + md_table(["object", "change", "details", "expected", "live"], rows)
        + (f"\n\n{adopting}." if adopting else "")
    )
    if out.json_mode:
        return
    out.warn(
        f"schema drift: {head} (added: only the live database has it; missing: the live"
        " database lacks it)"
    )
    for d in check.differences:
        out.info(f"  {d.describe()}")
        for side, sql in (("expected", d.expected), ("live", d.live)):
            if sql is not None:
                out.info(f"      {side + ':':<9} {' '.join(sql.split())}")
    if adopting:
        out.info(f"{adopting}.")


def schema_json(check: SchemaCheck | None) -> dict[str, Any] | None:
    """The schema comparison for `--json`, with the adopting baseline command."""
    if check is None:
        return None
    name = check.matches_up_to
    baseline = suggest.command("baseline", name) if name else None
    return {**_fields(check), "baseline_command": baseline}


def _code(sql: str | None) -> str:
    """A definition as one line of inline code in Markdown."""
    if sql is None:
        return ""
    text = " ".join(sql.split())
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def plan(out: Output, report: PlanReport) -> None:
    names = [p.name for p in report.pending]
    db = report.status.database
    out.outputs({"pending": len(names), "pending_names": names})
    out.summary(
        f"### d1deploy plan: {db}\n\n"
        + (
            md_table(
                ["pending migration", "statements", "findings"],
                [[p.name, len(p.statements), len(p.findings)] for p in report.pending],
            )
            if names
            else "Nothing pending."
        )
    )
    if out.json_mode:
        schema_drift(out, report.status.schema, adopt=True)
        out.json(
            {
                "ok": report.ok,
                "database": report.status.database,
                "pending": [
                    {
                        "name": p.name,
                        "statements": len(p.statements),
                        "guarded_tables": p.guarded_tables,
                        "dropped_tables": p.dropped_tables,
                        "allowed_row_loss": p.allowed_row_loss,
                        "findings": p.findings,
                    }
                    for p in report.pending
                ],
                "skipped": report.skipped,
                "drifted": report.status.drifted,
                "schema": schema_json(report.status.schema),
                "prechecks": report.prechecks,
                "deferred_prechecks": report.deferred,
            }
        )
        checks(out, report.prechecks, title="Prechecks")
        return
    if not names:
        out.info(f"{db}: nothing to do; every migration is applied.")
    else:
        out.info(f"{db}: {len(names)} migration(s) would be applied:")
        for p in report.pending:
            guard = f"row-loss guard on {len(p.guarded_tables)} table(s)"
            if p.dropped_tables:
                guard += f"; drops {', '.join(p.dropped_tables)}"
            out.info(f"  {p.name}: {len(p.statements)} statement(s), {guard}")
            for f in p.findings:
                out.info(f"    {f.location or p.file}: {f.severity}: {f.message}")
    if report.status.drifted:
        out.warn(f"drifted (changed since applied): {', '.join(report.status.drifted)}")
    schema_drift(out, report.status.schema, adopt=True)
    if report.skipped:
        out.info(f"Not included (after --to): {', '.join(report.skipped)}")
    checks(out, report.prechecks, title="Prechecks")
    if report.deferred:
        later = sum(len(p.prechecks) for p in report.pending if p.prechecks_wait)
        out.info(
            f"{later} precheck(s) read what earlier pending migrations create; migrate runs "
            f"them right before their migration: {', '.join(report.deferred)}"
        )
    if waiting := sum(not r.judged for r in report.prechecks):
        out.info(
            f"{waiting} write probe(s) did not meet their expectation on a copy of the schema"
            " without rows; migrate judges them on the database's rows"
        )


def migrate(out: Output, report: MigrateReport) -> None:
    if report.plan is not None:  # --dry-run
        plan(out, report.plan)
        if not out.json_mode:
            out.info("Dry run: nothing was changed.")
        return
    applied = [a.name for a in report.applied]
    backup_path = str(getattr(report.backup, "path", "") or "")
    restore = report.restore_command or ""
    out.outputs(
        {
            "applied": applied,
            "bookmark_before": report.bookmark_before or "",
            "backup_path": backup_path,
            "restore_command": restore,
            "still_applied": report.still_applied,
        }
    )
    checks(out, report.checks, title="Checks")
    if out.json_mode:
        out.json(_fields(report))
    else:
        if not report.applied and not report.rolled_back and report.ok:
            out.info(f"{report.database}: nothing to do; every migration is applied.")
        if report.rolled_back:
            undone = ", ".join(r.name for r in report.rolled_back)
            out.info(f"{report.database}: this run's migrations were rolled back ({undone}).")
        if report.restored_to:
            out.info(f"{report.database}: restored to bookmark {report.restored_to}.")
        if report.ok and applied:
            out.info(f"{report.database}: applied {len(applied)} migration(s).")
        if report.still_applied:
            out.info(
                f"{report.database}: still applied by this run (not undone):"
                f" {', '.join(report.still_applied)}."
            )
        if report.lock_held:
            out.warn(report.lock_held)
        if report.bookmark_before:
            out.info(f"Before this deploy: bookmark {report.bookmark_before}")
            out.info(f"To return to it: {restore}")
    lines = [f"### d1deploy migrate: {report.database} {'✅' if report.ok else '❌'}", ""]
    if report.applied:
        lines.append(
            md_table(
                ["applied", "ms", "rows written"],
                [[a.name, f"{a.duration_ms or 0:.0f}", a.rows_written] for a in report.applied],
            )
        )
    if report.rolled_back:
        lines += ["", "Rolled back automatically: " + ", ".join(r.name for r in report.rolled_back)]
    if report.still_applied:
        lines += ["", "Still applied (not undone): " + ", ".join(report.still_applied)]
    if report.error:
        lines += ["", md_escape(report.error)]
    if backup_path:
        lines += ["", f"Backup: `{backup_path}`"]
    if restore:
        lines += [
            "",
            f"Bookmark before: `{report.bookmark_before}`",
            "",
            f"Restore command: `{restore}`",
        ]
    out.summary("\n".join(lines))


def rollback(out: Output, report: RollbackReport) -> None:
    undone = [r.name for r in report.rolled_back]
    out.outputs(
        {
            "rolled_back": undone,
            "not_rolled_back": report.not_rolled_back,
            "bookmark_before": report.bookmark_before or "",
            "restore_command": report.restore_command or "",
        }
    )
    lines = [f"### d1deploy rollback: {report.database} {'✅' if report.ok else '❌'}", ""]
    lines.append(", ".join(undone) or "Nothing was rolled back.")
    if report.not_rolled_back:
        lines += ["", "Not rolled back: " + ", ".join(report.not_rolled_back)]
    if report.restore_command:
        lines += ["", f"Restore command: `{report.restore_command}`"]
    out.summary("\n".join(lines))
    if out.json_mode:
        out.json(_fields(report))
        return
    # The engine's progress lines named each migration as it was rolled back.
    if not report.rolled_back:
        out.info(f"{report.database}: nothing was rolled back.")
    if report.not_rolled_back:
        out.info(f"{report.database}: not rolled back: {', '.join(report.not_rolled_back)}.")
    if report.lock_held:
        out.warn(report.lock_held)
    if report.restore_command and not report.ok:
        out.info(f"To return to the state before this rollback: {report.restore_command}")


def verify(out: Output, report: VerifyReport) -> None:
    checks(out, report.checks, title=f"Verification of {report.database}")
    if out.json_mode:
        out.json(
            {
                "ok": report.ok,
                "database": report.database,
                "migrations": report.migrations,
                "checks": report.checks,
            }
        )
    elif not report.checks:
        out.info("No verify checks for the applied migrations.")


def baseline(out: Output, report: BaselineReport) -> None:
    if out.json_mode:
        out.json(_fields(report))
        return
    if report.forced_over:
        out.warn(
            "recorded with --force although the live schema differs from what they leave: "
            + "; ".join(d.describe() for d in report.forced_over)
        )
    if report.schema_unchecked:
        out.warn(
            f"recorded with --force without checking the live schema: {report.schema_unchecked}"
        )
    # The engine's progress lines named each migration as it was recorded.
    if report.already_applied:
        out.info(f"Already applied: {', '.join(report.already_applied)}")
    if report.lock_held:
        out.warn(report.lock_held)


def moved_companions(out: Output, report: MoveReport, *, dry_run: bool) -> None:
    if out.json_mode:
        out.json({"ok": True, "dry_run": dry_run, **_fields(report)})
        return
    # The progress lines named each move as it was made.
    count = len(report.moved)
    if not count:
        out.info(f"Nothing to move: no old-layout companion in {report.migrations_dir}.")
    elif dry_run:
        out.info(f"{count} file(s) would move; run again without --dry-run to move them.")
    else:
        out.info(f"Moved {count} file(s); wrangler now sees only the migrations.")


# -- backups and restores -----------------------------------------------------------------------
def backup(out: Output, result: BackupResult) -> None:
    out.outputs({"backup_path": str(result.path), "bookmark": result.bookmark or ""})
    if out.json_mode:
        out.json({"ok": True, **_fields(result)})
        return
    out.print(str(result.path))
    out.info(f"{result.bytes} bytes, sha256 {result.sha256}; sidecar {result.sidecar}")
    out.info(f"Proven: {proven(result)}")
    if result.bookmark:
        out.info(f"The dump is the database at bookmark {result.bookmark}")


def proven(result: BackupResult) -> str:
    """What a backup was proven to hold, in one line."""
    c = result.contents
    objects = f"{len(c.objects)} schema objects" if not result.options.no_schema else ""
    if result.options.no_data:
        return f"{objects} (schema only), {c.statements} complete statements"
    rows = sum(c.rows.get(t, 0) for t in result.rows_after)
    return (
        f"{objects}{' and ' if objects else ''}{rows} rows in {len(result.rows_after)} tables, "
        f"{c.statements} complete statements; each table's rows within its counts in the "
        "database right before and after the export"
    )


def restore_point(out: Output, point: RestorePoint) -> None:
    if not out.json_mode:
        out.info(f"Restore {point.database_name} to bookmark {point.bookmark}")
        if point.span is not None:
            out.info(
                f"  discards every change since {point.point_in_time:%Y-%m-%d %H:%M:%S} UTC "
                f"({point.span})"
            )
        if point.migrations_since:
            out.info(f"  undoes migrations applied since: {', '.join(point.migrations_since)}")
        out.info(f"  undo with: {suggest.restore(point.current_bookmark)}")
    if point.is_current:
        out.info("The database is already at that bookmark: nothing to restore.")


def bookmark(out: Output, database: str, mark: str, at: datetime | None) -> None:
    """The bookmark on stdout, how to return to it on stderr."""
    if out.json_mode:
        out.json({"ok": True, "database": database, "bookmark": mark, "timestamp": at})
        return
    out.print(mark)
    out.info(f"To return {database} to this point: {suggest.restore(mark)}")


def created(out: Output, paths: Sequence[Path]) -> None:
    """The files `new` created, one a line on stdout."""
    if out.json_mode:
        out.json({"ok": True, "created": paths})
        return
    for path in paths:
        out.print(str(path))


def unlocked(out: Output, released: Lease | None) -> None:
    """`unlock`: the lease it released, or that none was held."""
    if released is None:
        out.info("No deploy lock is held.")
    else:
        out.info(
            f"Released the deploy lock held by {released.holder} (since {released.acquired_at})."
        )
    if out.json_mode:
        out.json({"ok": True, "released": released})


def restored(out: Output, point: RestorePoint, result: RestoreResult) -> None:
    undo = result.previous_bookmark or point.current_bookmark
    out.outputs({"bookmark": result.bookmark, "previous_bookmark": undo})
    if out.json_mode:
        out.json(
            {
                "ok": True,
                "database": point.database_name,
                "bookmark": result.bookmark,
                "previous_bookmark": undo,
                "undo_command": suggest.restore(undo),
            }
        )
        return
    out.info(f"Restored {point.database_name}: {result.message or 'done'}")
    out.info(f"To undo: {suggest.restore(undo)}")


def restored_backup(out: Output, result: RestoreFromBackupResult) -> None:
    if out.json_mode:
        out.json({"ok": True, **_fields(result)})
        return
    out.info(
        f"Imported {result.path} into {result.database_name}"
        f"{'' if result.verified else ' (unverified: no sidecar)'}: {result.num_queries} "
        f"queries, {result.rows_written} rows written."
    )
    if result.rows:
        out.info(f"Rows counted in {result.database_name} after the import (backup -> now):")
        for r in result.rows:
            before = f", {r.before} there before" if r.before else ""
            out.info(f"  {r.table}: {r.in_backup} -> {r.after}{before}")
    if result.bookmark_before:
        out.info(f"To undo: {suggest.restore(result.bookmark_before)}")


def rehearsal(out: Output, report: RehearsalReport) -> None:
    tables = sorted(set(report.rows_before) | set(report.rows_after))
    rows = [[t, report.rows_before.get(t, "-"), report.rows_after.get(t, "-")] for t in tables]
    out.summary(
        f"### d1deploy rehearsal: {report.database} {'✅' if report.ok else '❌'}\n\n"
        + md_table(
            ["step", "ok", "ms", "detail"],
            [
                [s.name, "✅" if s.ok else "❌", f"{s.duration_ms:.0f}", s.detail]
                for s in report.steps
            ],
        )
        + "\n\n"
        + md_table(["table", "rows before", "rows after"], rows)
    )
    if out.json_mode:
        _checks_summary(out, report.checks, "Checks")
        out.json(_fields(report))
        return
    out.info(f"Rehearsal of {report.database} on a local copy ({report.source}):")
    for step in report.steps:
        out.info(
            f"  {'ok  ' if step.ok else 'FAIL'} {step.name:<14} {step.duration_ms:8.0f} ms"
            f"  {step.detail}"
        )
    checks(out, report.checks, title="Checks")
    if rows:
        out.info("Rows per table (before -> after):")
        for t, before, after in rows:
            out.info(f"  {t}: {before} -> {after}")
    out.info("Rehearsal passed." if report.ok else f"Rehearsal FAILED: {report.error}")


def describe_migrate(report: MigrateReport) -> str:
    names = [a.name for a in report.applied]
    return f"applied {len(names)}: {', '.join(names)}" if names else "nothing pending"


def describe_status(report: StatusReport) -> str:
    drift = len(report.schema_drift)
    return f"{len(report.applied)} applied, {len(report.pending)} pending" + (
        f", {drift} schema difference(s)" if drift else ""
    )


def describe_verify(report: VerifyReport) -> str:
    return f"{len(report.checks)} check(s) passed"


def describe_rollback(report: RollbackReport) -> str:
    return f"rolled back {len(report.rolled_back)}"


def describe_backup(result: BackupResult) -> str:
    return f"{result.path} ({result.bytes} bytes)"


def fleet(out: Output, report: FleetReport[Any], describe: Callable[[Any], str]) -> None:
    """One line per database; `describe` says what an ok database's report holds."""
    rows = []
    for r in report.results:
        if r.status == "ok":
            detail = describe(r.value)
        elif r.error is not None:
            detail = f"exit {r.error.exit_code}: {r.error.message}"
        else:
            detail = r.reason or ""
        rows.append([r.name, r.status, f"{r.duration_ms / 1000:.1f} s", detail])
    counts = report.counts
    line = f"{counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped"
    out.outputs({"ok_count": counts["ok"], "failed": [r.name for r in report.failed]})
    out.summary(
        f"### d1deploy fleet: {line}\n\n" + md_table(["database", "status", "time", "detail"], rows)
    )
    if out.json_mode:
        out.json({"ok": report.ok, "counts": counts, **_fields(report)})
        return
    out.table(["database", "status", "time", "detail"], rows)
    if report.canary_failed:
        out.info(f"Canary {report.canary_failed} failed: the other databases were not touched.")
    out.info(f"{len(report.results)} database(s): {line}.")


def _fields(report: object) -> dict[str, Any]:
    """A report's fields as a dict, for `--json` (output.to_jsonable does the rest)."""
    import dataclasses

    assert dataclasses.is_dataclass(report)
    return {f.name: getattr(report, f.name) for f in dataclasses.fields(report) if f.repr}
