"""`python -m tests.emulator`: serve the D1 emulator on loopback until interrupted.

Prints the API base URL as the first line of stdout (for scripts and benches), then the
environment a client needs on stderr.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

from .api import D1Emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description=__doc__)
    parser.add_argument("--root", type=Path, help="where the SQLite files live (default: temp)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per API call")
    parser.add_argument("--db", action="extend", nargs="+", default=[], help="databases to create")
    parser.add_argument("--token", default="test-token")
    parser.add_argument("--account-id", default="0123456789abcdef0123456789abcdef")
    parser.add_argument("--export-polls", type=int, default=1)
    parser.add_argument("--import-polls", type=int, default=1)
    parser.add_argument("--no-snapshots", action="store_true", help="snapshot only on demand")
    args = parser.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="d1-emulator-"))
    emulator = D1Emulator(
        root,
        account_id=args.account_id,
        token=args.token,
        latency=args.latency,
        export_polls=args.export_polls,
        import_polls=args.import_polls,
        snapshots=not args.no_snapshots,
    )
    for name in args.db or ["telegram-conversations"]:
        emulator.create_database(name)
    with emulator.serve(args.host, args.port) as base_url:
        print(base_url, flush=True)
        print(
            f"CLOUDFLARE_API_BASE_URL={base_url} CLOUDFLARE_API_TOKEN={args.token} "
            f"CLOUDFLARE_ACCOUNT_ID={args.account_id}  (root: {root})",
            file=sys.stderr,
            flush=True,
        )
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    emulator.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
