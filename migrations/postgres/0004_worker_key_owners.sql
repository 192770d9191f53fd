-- Worker keys are bound to the owners whose jobs they may act on (issue #26): either every owner
-- (`all_owners`, a platform-internal key) or the owner keys listed in `worker_key_owners`.
-- Worker keys made before this migration could act on any job, so they keep doing so.

ALTER TABLE api_keys ADD COLUMN all_owners BOOLEAN NOT NULL DEFAULT FALSE;

UPDATE api_keys SET all_owners = TRUE WHERE scope = 'worker';

CREATE TABLE worker_key_owners (
    key_id       TEXT NOT NULL REFERENCES api_keys (key_id),
    owner_key_id TEXT NOT NULL REFERENCES api_keys (key_id),
    PRIMARY KEY (key_id, owner_key_id)
);

-- A binding is part of the key record servers cache (migration 0002): a change to one drops the
-- cached lookups like a change to the key itself.
CREATE FUNCTION announce_key_owners_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('jobtracker_keys', OLD.key_id);
    ELSE
        PERFORM pg_notify('jobtracker_keys', NEW.key_id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER worker_key_owners_announce AFTER INSERT OR UPDATE OR DELETE ON worker_key_owners
    FOR EACH ROW EXECUTE FUNCTION announce_key_owners_change();
