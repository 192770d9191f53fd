-- The inventory is filed by what writes each job's `created` event rather than by a trigger on
-- `log`: the store's `INSERT_CREATED` (store/postgres/sql.py) and the `events` view's insert (a
-- created event written by hand) each call `file_created_job`. The trigger's WHEN clause was
-- evaluated for every batch any append wrote (about 18k server instructions, 2% of a one-event
-- append), to act on one batch per job.
DROP TRIGGER log_job_index_on_create ON log;
DROP FUNCTION index_created_batch();

-- A created event's fields: the positional layout the store writes (owner field 0, labels field
-- 5), or an object written by hand (owner, labels by name), as the dropped trigger read them.
CREATE FUNCTION file_created_job(job TEXT, fields JSONB, at TIMESTAMPTZ) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    owner TEXT;
    labels JSONB;
BEGIN
    IF jsonb_typeof(fields) = 'array' THEN
        owner := fields ->> 0;
        labels := fields -> 5;
    ELSE
        owner := fields ->> 'owner';
        labels := fields -> 'labels';
    END IF;
    IF owner IS NULL THEN
        RETURN;
    END IF;
    IF jsonb_typeof(labels) IS DISTINCT FROM 'object' THEN
        labels := NULL;
    END IF;
    INSERT INTO job_index (job_id, owner, created_at, labels)
    VALUES (job, owner, at, labels)
    ON CONFLICT DO NOTHING;
    INSERT INTO job_labels (owner, key, value, created_at, job_id)
    SELECT owner, label.key, label.value, at, job
    FROM jsonb_each_text(labels) AS label
    ON CONFLICT DO NOTHING;
END
$$;

-- As in 0010, and a created event at version 1 files its job.
CREATE OR REPLACE FUNCTION events_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    key INTEGER;
    code INTEGER;
    pos BIGINT;
    schema INTEGER := coalesce(NEW.schema_version, 1);
    at TIMESTAMPTZ := coalesce(NEW.recorded_at, now());
BEGIN
    INSERT INTO log_jobs (job_id) VALUES (NEW.job_id) ON CONFLICT (job_id) DO NOTHING;
    SELECT job_key INTO key FROM log_jobs WHERE job_id = NEW.job_id;
    code := log_type_code(NEW.type) + 16 * (schema - 1);
    pos := coalesce(NEW.position, nextval('log_position'));
    IF NEW.position IS NOT NULL AND NEW.position >= nextval('log_position') THEN
        PERFORM setval('log_position', NEW.position);
    END IF;
    INSERT INTO log (job_key, last_version, last_position, recorded_at, types, uuids, texts,
                     odd_types, data)
    VALUES (key, NEW.version, pos, at,
            CASE WHEN code BETWEEN 1 AND 255 AND schema >= 1 THEN set_byte('\x00'::bytea, 0, code)
                 ELSE '\x00'::bytea END,
            NULL, ARRAY[NEW.event_id],
            CASE WHEN code BETWEEN 1 AND 255 AND schema >= 1 THEN NULL
                 ELSE NEW.type || '/' || schema END,
            coalesce(NEW.data, '{}'::jsonb)::text);
    IF log_uuid(NEW.event_id) IS NOT NULL THEN
        INSERT INTO log_ids (event_id, position) VALUES (log_uuid(NEW.event_id), pos);
    ELSE
        INSERT INTO log_text_ids (event_id, position) VALUES (NEW.event_id, pos);
    END IF;
    IF NEW.version = 1 AND NEW.type = 'created' THEN
        PERFORM file_created_job(NEW.job_id, coalesce(NEW.data, '{}'::jsonb), at);
    END IF;
    RETURN NEW;
END
$$;
