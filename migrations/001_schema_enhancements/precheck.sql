-- The seed's pre-deployment checklist: rows that the new CHECK constraints would refuse.
-- A row listed here makes the INSERT ... SELECT in 001 fail; fix the data and rerun.

-- check: no negative balances
-- expect: no rows
SELECT id, user_id, balance FROM user_deposits WHERE balance < 0;

-- check: no depositor names over 15 characters
-- expect: no rows
SELECT id, depositor_name, length(depositor_name) AS len
FROM deposit_transactions
WHERE length(depositor_name) > 15;

-- check: audit_logs does not exist yet
-- expect: value = 0
SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_logs';
