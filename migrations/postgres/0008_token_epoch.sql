-- Bumped in the transaction that rotates or revokes a member token. Each instance caches
-- member tokens and re-reads this one row at most once a second: a changed epoch drops its
-- cache, so a rotated token stops working everywhere within a second.
CREATE TABLE token_epoch (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch BIGINT  NOT NULL
);
INSERT INTO token_epoch (id, epoch) VALUES (1, 0);
