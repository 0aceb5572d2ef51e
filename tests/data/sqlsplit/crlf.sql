-- CRLF line endings
CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
CREATE TRIGGER t_ins AFTER INSERT ON t
BEGIN
  UPDATE t SET v = 'a;
b' WHERE id = NEW.id;
END;

INSERT INTO t (v) VALUES ('x');
