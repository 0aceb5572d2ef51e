CREATE TABLE events (id INTEGER PRIMARY KEY, begin TEXT, end TEXT, "case" TEXT);
CREATE TRIGGER events_fix AFTER INSERT ON events BEGIN
  UPDATE events SET end = begin WHERE end IS NULL;
  UPDATE events SET "case" = 'END' WHERE id = NEW.id;
END;
SELECT begin, end FROM events WHERE end > begin;
UPDATE events SET end = NULL;
