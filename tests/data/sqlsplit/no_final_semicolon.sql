CREATE TABLE t (id INTEGER);
INSERT INTO t VALUES (1);

SELECT * FROM t -- no semicolon; at the end
