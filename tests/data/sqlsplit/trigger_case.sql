CREATE TABLE deposits (id INTEGER PRIMARY KEY, balance INTEGER, kind TEXT);
CREATE TRIGGER deposits_kind AFTER UPDATE ON deposits BEGIN
  UPDATE deposits SET kind = CASE
    WHEN NEW.balance < 0 THEN 'debt'
    WHEN NEW.balance = 0 THEN CASE WHEN OLD.balance > 0 THEN 'emptied' ELSE 'empty' END
    ELSE 'credit'
  END;
  SELECT CASE WHEN NEW.balance > 1000000 THEN RAISE(ABORT, 'too much; END') END;
END;
SELECT CASE WHEN 1 THEN 'END;' ELSE 'x' END AS e;
SELECT CASE kind WHEN 'a' THEN 1 END, CASE WHEN 1 THEN 2 END FROM deposits;
