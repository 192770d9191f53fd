-- Worker keys are bound to the owners whose jobs they may act on (issue #26): either every owner
-- (`all_owners`, a platform-internal key) or the owner keys listed in `worker_key_owners`.
-- Worker keys made before this migration could act on any job, so they keep doing so.

ALTER TABLE api_keys ADD COLUMN all_owners INTEGER NOT NULL DEFAULT 0 CHECK (all_owners IN (0, 1));

UPDATE api_keys SET all_owners = 1 WHERE scope = 'worker';

CREATE TABLE worker_key_owners (
    key_id       TEXT NOT NULL REFERENCES api_keys (key_id),
    owner_key_id TEXT NOT NULL REFERENCES api_keys (key_id),
    PRIMARY KEY (key_id, owner_key_id)
) WITHOUT ROWID;
