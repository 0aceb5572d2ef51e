INSERT INTO t VALUES ('a;b', 'it''s; fine', '-- not a comment', '/* nor this */');
INSERT INTO t VALUES ('line one;
line two -- still a string
''quoted'';');
SELECT X'3B3B', 'x'';''y', ';';
SELECT '''', '';
SELECT 'end', 'END;', 'BEGIN;';
