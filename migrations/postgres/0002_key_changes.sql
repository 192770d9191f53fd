-- Every change to a key is announced on 'jobtracker_keys', so API servers that keep key lookups
-- in memory drop them when a key is revoked, by whatever process and on whatever host.

CREATE FUNCTION announce_key_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('jobtracker_keys', OLD.key_hash);
    ELSE
        PERFORM pg_notify('jobtracker_keys', NEW.key_hash);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_announce AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION announce_key_change();
