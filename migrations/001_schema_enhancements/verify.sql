-- The seed's post-deployment verification. The INSERTs are probes: d1deploy runs them in
-- a batch forced to abort (or on a schema-only copy), so they never leave a row behind,
-- even when the constraint they test is missing.

-- check: a negative balance is refused
-- expect: error ~ CHECK constraint failed: balance >= 0
INSERT INTO user_deposits (user_id, balance) VALUES (999999, -1000);

-- check: a 16-character depositor name is refused
-- expect: error ~ CHECK constraint failed: length(depositor_name) <= 15
INSERT INTO deposit_transactions (user_id, amount, depositor_name)
VALUES (999999, 1000, 'ABCDEFGHIJKLMNOP');

-- check: a 15-character Korean depositor name is accepted (length counts characters)
INSERT INTO deposit_transactions (user_id, amount, depositor_name)
VALUES (999999, 1000, '가나다라마바사아자차카타파하거');

-- check: audit_logs exists
-- expect: value = 1
SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_logs';

-- check: audit_logs has its indexes
-- expect: value = 2
SELECT count(*) FROM sqlite_master
WHERE type = 'index' AND tbl_name = 'audit_logs'
  AND name IN ('idx_audit_logs_telegram_created', 'idx_audit_logs_action_created');

-- check: deposit_transactions kept its indexes
-- expect: value = 2
SELECT count(*) FROM sqlite_master
WHERE type = 'index' AND tbl_name = 'deposit_transactions'
  AND name IN ('idx_deposit_transactions_user', 'idx_deposit_transactions_status');

-- check: user_deposits kept its UNIQUE (user_id) index
-- expect: value = 1
SELECT count(*) FROM sqlite_master
WHERE type = 'index' AND tbl_name = 'user_deposits' AND name LIKE 'sqlite_autoindex_%';

-- check: audit_logs is readable (the seed's SELECT COUNT(*) FROM audit_logs)
-- expect: rows = 1
SELECT count(*) FROM audit_logs;

-- check: no balance or depositor name breaks the new rules
-- expect: no rows
SELECT 'user_deposits' AS tbl, id FROM user_deposits WHERE balance < 0
UNION ALL
SELECT 'deposit_transactions', id FROM deposit_transactions WHERE length(depositor_name) > 15;
