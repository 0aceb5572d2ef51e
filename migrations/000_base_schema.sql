-- The telegram-conversations schema as it stood before migration 001, inferred from the
-- seed (MIGRATION_SUMMARY.md). Production already has these tables: record this file
-- with `d1deploy baseline 000_base_schema` there; IF NOT EXISTS lets a fresh database
-- apply it too.

CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    telegram_id TEXT UNIQUE NOT NULL,
    username TEXT,
    first_name TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);

-- No foreign key on user_id: the seed's probe INSERT (user_id 999999) succeeds on this
-- schema, which is exactly why its "should fail" test was dangerous in production.
CREATE TABLE IF NOT EXISTS user_deposits (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL UNIQUE,
    balance INTEGER NOT NULL DEFAULT 0,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE IF NOT EXISTS deposit_transactions (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    type TEXT NOT NULL DEFAULT 'deposit',
    amount INTEGER NOT NULL,
    depositor_name TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    description TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    confirmed_at DATETIME
);

CREATE INDEX IF NOT EXISTS idx_deposit_transactions_user
    ON deposit_transactions (user_id, created_at);

CREATE INDEX IF NOT EXISTS idx_deposit_transactions_status
    ON deposit_transactions (status, created_at);
