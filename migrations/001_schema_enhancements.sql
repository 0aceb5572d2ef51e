-- Migration 001: CHECK constraints on user_deposits.balance and
-- deposit_transactions.depositor_name, and the new audit_logs table.
--
-- SQLite cannot add a CHECK to an existing column, so both tables are rebuilt the way
-- https://www.sqlite.org/lang_altertable.html#otheralter describes: create the new
-- table, copy every column explicitly, drop the old one, rename, recreate the indexes.
-- No BEGIN/COMMIT: D1 refuses them, and d1deploy sends the whole file as one batch.
-- Neither rebuilt table is referenced by a foreign key, so no DROP here cascades.

CREATE TABLE user_deposits_new (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL UNIQUE,
    balance INTEGER NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);

INSERT INTO user_deposits_new (id, user_id, balance, created_at, updated_at)
SELECT id, user_id, balance, created_at, updated_at FROM user_deposits;

DROP TABLE user_deposits;

ALTER TABLE user_deposits_new RENAME TO user_deposits;

CREATE TABLE deposit_transactions_new (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    type TEXT NOT NULL DEFAULT 'deposit',
    amount INTEGER NOT NULL,
    depositor_name TEXT CHECK (length(depositor_name) <= 15),
    status TEXT NOT NULL DEFAULT 'pending',
    description TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    confirmed_at DATETIME
);

INSERT INTO deposit_transactions_new (
    id, user_id, type, amount, depositor_name, status, description, created_at, confirmed_at
)
SELECT id, user_id, type, amount, depositor_name, status, description, created_at, confirmed_at
FROM deposit_transactions;

-- Dropping the table drops its indexes; they are recreated on the renamed table below.
DROP TABLE deposit_transactions;

ALTER TABLE deposit_transactions_new RENAME TO deposit_transactions;

CREATE INDEX idx_deposit_transactions_user
    ON deposit_transactions (user_id, created_at);

CREATE INDEX idx_deposit_transactions_status
    ON deposit_transactions (status, created_at);

-- details holds a JSON object (read with json_extract). created_at keeps SQLite's
-- 'YYYY-MM-DD HH:MM:SS' text so date(created_at) and datetime('now', ...) compare.
CREATE TABLE audit_logs (
    id INTEGER PRIMARY KEY,
    user_id INTEGER,
    telegram_id TEXT,
    action TEXT NOT NULL,
    resource_type TEXT,
    resource_id TEXT,
    details TEXT,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP
);

-- A user's recent activity: WHERE telegram_id = ? ORDER BY created_at DESC.
CREATE INDEX idx_audit_logs_telegram_created ON audit_logs (telegram_id, created_at);

-- Today's deposits and failed-operation scans: WHERE action ... AND created_at ...
CREATE INDEX idx_audit_logs_action_created ON audit_logs (action, created_at);
