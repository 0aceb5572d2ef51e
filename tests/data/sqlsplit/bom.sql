CREATE TABLE t (id INTEGER);
-- the BOM does not make a line
INSERT INTO t VALUES (1);
