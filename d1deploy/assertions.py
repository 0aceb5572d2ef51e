"""Read checks as assertions inside a migration's own request.

A precheck or verify check that reads rows (`checks.in_batch`) need not cost a request
of its own: the migration's batch carries it (`ledger.Session.send`'s `head`, and
`ledger.Change.checks` right after the migration it verifies). Its own SELECT comes
first, so that when the batch succeeds the check's rows come back in that statement's
result, as they do when it runs alone; then ONE statement per group of checks asserts
every expectation and fails the batch otherwise (`guard.abort_if`, with this run's
nonce), its message carrying what each check found: its row count and up to
`checks.ROW_SAMPLE` rows, as JSON (BLOBs as hex). The batch is one transaction on D1,
so a failing check aborts the migrations it sits with, and needs no rollback SQL. A
read that D1 says wrote is caught from the SELECT's answer, as outside a batch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace

from d1deploy import d1sqlite, errors, guard
from d1deploy.backend import QueryResult, SqlValue, Statement
from d1deploy.checks import ROW_SAMPLE, Check, CheckResult, Expectation, judge, sql_literal

PRECHECKS_ABORT = "prechecks failed: "


def verify_abort(name: str) -> str:
    """The abort message of the verify checks sent with migration `name`: several
    migrations share a request, and the message says whose checks failed."""
    return f"verification of {name} failed: "


def batch_statements(found: Sequence[Check], abort: str) -> list[Statement]:
    """`found` (each `in_batch`) as statements of a migration's batch: each check's own
    SELECT, whose result brings its rows back when the batch succeeds, then ONE
    assertion that fails the batch (`guard.abort_if`, message `abort` + what each check
    found: its row count and up to ROW_SAMPLE rows) unless every check holds. A failing
    check thus aborts the batch it sits in, with the migration in it. No checks, no
    statements."""
    if not found:
        return []
    ctes: list[str] = []
    holds: list[str] = []
    found_sql: list[str] = []
    for k, check in enumerate(found):
        assert check.columns is not None
        name = f"_d1deploy_check_{k}"
        cols = [f"c{i}" for i in range(len(check.columns))]
        body = check.sql.rstrip()
        body = body[:-1] if body.endswith(";") else body
        ctes.append(f"{name}({', '.join(cols)}) AS (\n{body}\n)")
        count = f"(SELECT count(*) FROM {name})"
        holds.append(_holds_sql(check.expect, name, count))
        cells = ", ".join(
            f"CASE typeof({c}) WHEN 'blob' THEN json_object('blob', hex({c})) ELSE {c} END"
            for c in cols
        )
        rows = (
            f"(SELECT json_group_array(json_array({cells}))"
            f" FROM (SELECT * FROM {name} LIMIT {ROW_SAMPLE}))"
        )
        found_sql.append(f"json_array({count}, json({rows}))")
    condition = " AND ".join(f"({h})" for h in holds)
    message = f"{guard.quote_text(abort)} || json_array({', '.join(found_sql)})"
    assertion = "WITH " + ", ".join(ctes) + " " + guard.abort_if(f"NOT ({condition})", message)
    return [*(Statement(c.sql, file=c.file, line=c.line) for c in found), Statement(assertion)]


def _holds_sql(expect: Expectation, name: str, count: str) -> str:
    """SQL for "the expectation holds" on the rows of CTE `name`, as `checks.judge` decides."""
    if expect.kind == "no_rows":
        return f"NOT EXISTS (SELECT 1 FROM {name})"
    if expect.kind == "rows":
        return f"{count} {expect.op} {expect.count}"
    wanted = sql_literal(expect.value)
    return (
        f"EXISTS (SELECT 1 FROM {name}) AND (SELECT CASE"
        f" WHEN typeof(c0) IN ('integer', 'real') AND typeof({wanted}) IN ('integer', 'real')"
        f" THEN c0 = {wanted} ELSE typeof(c0) = typeof({wanted}) AND c0 IS {wanted} END"
        f" FROM {name} LIMIT 1)"
    )


def judge_batch(found: Sequence[Check], results: Sequence[QueryResult]) -> list[CheckResult]:
    """The results of `found` from their SELECTs' answers in a batch that succeeded
    (none when its answer was lost: the batch landed, so its assertion held). A read
    that D1 says wrote stops the run (`ReadWrote`), as outside a batch.

    :raises ReadWrote: D1's answer to a check shows a change."""
    if not results:
        return [CheckResult(c, True, "held (the request's answer was lost)") for c in found]
    judged = []
    for check, result in zip(found, results, strict=True):
        if result.wrote:
            sql = " ".join(check.sql.split()).rstrip(";")
            raise errors.ReadWrote(
                f"`{sql[:200]}` was sent as a read inside the migration's request but changed"
                f" the database (D1 answered changes {result.changes}, rows_written"
                f" {result.rows_written}); the run stops here",
                changed=True,
                file=check.file,
                line=check.line,
            )
        judged.append(judge(check, result=result))
    return judged


def failed_batch(found: Sequence[Check], abort: str, message: str) -> list[CheckResult] | None:
    """The results of `found` from the message of the assertion that failed their
    batch (`batch_statements`), or None when `message` is not that assertion's."""
    if not found or not message.startswith(abort):
        return None
    try:
        facts = json.loads(message[len(abort) :])
    except ValueError:
        return None
    results = []
    for check, (count, rows) in zip(found, facts, strict=True):
        assert check.columns is not None
        sample = tuple(tuple(_cell(v) for v in row) for row in rows)
        result = judge(check, result=QueryResult(check.columns, sample), count=count)
        results.append(result)
    if all(r.ok for r in results):  # SQLite's verdict stands where the two differ
        return [replace(r, ok=False) for r in results]
    return results


def _cell(value: object) -> SqlValue:
    """A value of the assertion's JSON as D1 answers it (`d1sqlite.json_value`: an
    integral REAL comes back as an integer); BLOBs were written as their hex."""
    if isinstance(value, dict) and "blob" in value:
        return bytes.fromhex(str(value["blob"]))
    if isinstance(value, str | int | float) or value is None:
        return d1sqlite.json_value(value)
    return json.dumps(value)
