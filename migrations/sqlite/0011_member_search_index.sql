-- `GET /admin/users?q` (SPEC §15): an index for the name search, so a rare term is an index
-- lookup instead of a walk over every member (docs/back-office.md).
--
-- An FTS5 table over `users.name_folded` with the `trigram` tokenizer: a quoted FTS5 phrase of
-- three or more characters matches the rows whose folded name contains it, in rowid (= users.id)
-- order, so a page is read from the cursor on and stops after a page of rows. `case_sensitive 1`:
-- `name_folded` already has ASCII letters lowered, and every other character compares exactly,
-- as with the `LIKE` the query still applies to each candidate. External content (the text
-- lives in `users` only); the triggers below keep it in step inside the transaction that
-- writes the member, on both write paths (sqlx and the rusqlite group committer).
CREATE VIRTUAL TABLE users_name_search USING fts5 (
    name_folded,
    content = 'users',
    content_rowid = 'id',
    tokenize = 'trigram case_sensitive 1'
);

CREATE TRIGGER users_name_search_insert AFTER INSERT ON users
WHEN NEW.name_folded IS NOT NULL
BEGIN
    INSERT INTO users_name_search (rowid, name_folded) VALUES (NEW.id, NEW.name_folded);
END;

CREATE TRIGGER users_name_search_update AFTER UPDATE OF name_folded ON users
BEGIN
    INSERT INTO users_name_search (users_name_search, rowid, name_folded)
    SELECT 'delete', OLD.id, OLD.name_folded WHERE OLD.name_folded IS NOT NULL;
    INSERT INTO users_name_search (rowid, name_folded)
    SELECT NEW.id, NEW.name_folded WHERE NEW.name_folded IS NOT NULL;
END;

CREATE TRIGGER users_name_search_delete AFTER DELETE ON users
WHEN OLD.name_folded IS NOT NULL
BEGIN
    INSERT INTO users_name_search (users_name_search, rowid, name_folded)
    VALUES ('delete', OLD.id, OLD.name_folded);
END;

-- Members already there.
INSERT INTO users_name_search (rowid, name_folded)
SELECT id, name_folded FROM users WHERE name_folded IS NOT NULL;
