"""The printing boundary: the byte progress bar appears on a terminal only."""

from __future__ import annotations

import io

from d1deploy.cli.output import Output


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_download_shows_a_progress_bar_on_a_terminal() -> None:
    err = Terminal()
    out = Output(stdout=io.StringIO(), stderr=err)
    with out.byte_progress("backup of db") as on_bytes:
        on_bytes(1_000_000, 4_000_000)
        on_bytes(4_000_000, 4_000_000)
    assert "backup of db" in err.getvalue()


def test_no_progress_bar_in_logs_and_pipes() -> None:
    err = io.StringIO()
    out = Output(stdout=io.StringIO(), stderr=err)
    with out.byte_progress("backup of db") as on_bytes:
        on_bytes(1_000_000, None)
    assert err.getvalue() == ""
