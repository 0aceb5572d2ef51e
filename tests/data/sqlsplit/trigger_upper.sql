-- Upper-case trigger bodies keep their inner statements.
CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
CREATE TABLE audit_logs (id INTEGER PRIMARY KEY, action TEXT, user_id INTEGER);

CREATE TRIGGER users_audit AFTER INSERT ON users
BEGIN
  INSERT INTO audit_logs (action, user_id) VALUES ('insert;', NEW.id);
  UPDATE users SET name = trim(name) WHERE id = NEW.id;
END;
CREATE TRIGGER users_delete_audit AFTER DELETE ON users FOR EACH ROW BEGIN
  INSERT INTO audit_logs (action, user_id) VALUES ('delete', OLD.id);
END;
SELECT count(*) FROM users;
