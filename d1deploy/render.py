"""How each command's report looks: for people on stderr/stdout, as JSON, and in GitHub.

Every function takes the `Output` (the only writer) and a core report. Data a user
asked for (query results, lists) goes to stdout; narration goes to stderr.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from d1deploy.output import Output, md_table

if TYPE_CHECKING:
    from d1deploy.lint import Finding
    from d1deploy.sqlexec import ExecReport


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


def lint_findings(out: Output, findings: Sequence[Finding], *, checked: int) -> None:
    if out.json_mode:
        out.json(
            {
                "ok": not any(f.severity == "error" for f in findings),
                "files": checked,
                "findings": list(findings),
            }
        )
        return
    for f in findings:
        where = f"{f.location}: " if f.location else ""
        out.info(f"{where}{f.severity}: {f.message} [{f.code}]")
        if f.hint:
            out.info(f"  hint: {f.hint}")
        if out.github.enabled:
            command = "error" if f.severity == "error" else "warning"
            props = ""
            if f.file:
                props = f" file={f.file}" + (f",line={f.line}" if f.line is not None else "")
            out.info(f"::{command}{props}::{out.github.escape_data(f.message)}")
    errors = sum(f.severity == "error" for f in findings)
    out.info(f"{checked} file(s) checked: {errors} error(s), {len(findings) - errors} warning(s).")
    if findings:
        out.summary(
            "### Lint\n\n"
            + md_table(
                ["where", "severity", "finding"],
                [[f.location or "", f.severity, f.message] for f in findings],
            )
        )


def _shorten(sql: str, width: int = 60) -> str:
    one_line = " ".join(sql.split())
    return one_line if len(one_line) <= width else one_line[: width - 1] + "…"


def kv(out: Output, pairs: Sequence[tuple[str, Any]]) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        out.info(f"  {key.ljust(width)}  {value}")
