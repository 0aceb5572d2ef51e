-- Rollback of 001_schema_enhancements.sql: rebuild both tables exactly as
-- 000_base_schema.sql defines them (without the CHECKs), keeping every row and index,
-- and drop audit_logs. Its rows are lost: they did not exist before 001.

DROP INDEX idx_audit_logs_action_created;

DROP INDEX idx_audit_logs_telegram_created;

DROP TABLE audit_logs;

CREATE TABLE deposit_transactions_old (
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

INSERT INTO deposit_transactions_old (
    id, user_id, type, amount, depositor_name, status, description, created_at, confirmed_at
)
SELECT id, user_id, type, amount, depositor_name, status, description, created_at, confirmed_at
FROM deposit_transactions;

DROP TABLE deposit_transactions;

ALTER TABLE deposit_transactions_old RENAME TO deposit_transactions;

CREATE INDEX idx_deposit_transactions_user
    ON deposit_transactions (user_id, created_at);

CREATE INDEX idx_deposit_transactions_status
    ON deposit_transactions (status, created_at);

CREATE TABLE user_deposits_old (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL UNIQUE,
    balance INTEGER NOT NULL DEFAULT 0,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);

INSERT INTO user_deposits_old (id, user_id, balance, created_at, updated_at)
SELECT id, user_id, balance, created_at, updated_at FROM user_deposits;

DROP TABLE user_deposits;

ALTER TABLE user_deposits_old RENAME TO user_deposits;
