"""The defaults of d1deploy's settings, in one place: what a project gets when neither a
flag, the environment nor a config file says otherwise (`config.resolve`), and what
`Project` and the engine's functions assume when called from Python without them.

D1's own limits are not settings: they live in `limits`.
"""

from __future__ import annotations

from pathlib import Path

API_BASE_URL = "https://api.cloudflare.com/client/v4"
MIGRATIONS_DIR = Path("migrations")
MIGRATIONS_TABLE = "d1_migrations"
"""wrangler's ledger table, so that wrangler and d1deploy see the same migrations."""
MIGRATIONS_PATTERN = "*.sql"
LOCK_TTL_SECONDS = 900
"""How long a deploy lease lasts unless extended: longer than any single request."""
LOCAL_PATH = Path(".d1deploy") / "local.sqlite"
BACKUP_DIR = Path("backups")
