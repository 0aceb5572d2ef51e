PRAGMA defer_foreign_keys=TRUE;
CREATE TABLE "user_deposits" (user_id INTEGER PRIMARY KEY, balance INTEGER NOT NULL DEFAULT 0);
INSERT INTO "user_deposits" ("user_id","balance") VALUES(1,1000);
INSERT INTO "user_deposits" ("user_id","balance") VALUES(2,-5);
CREATE TABLE "deposit_transactions" (id INTEGER PRIMARY KEY, depositor_name TEXT, memo TEXT);
INSERT INTO "deposit_transactions" ("id","depositor_name","memo") VALUES(1,'O''Brien','paid; thanks -- see /* note */');
CREATE INDEX idx_tx_name ON deposit_transactions(depositor_name);
