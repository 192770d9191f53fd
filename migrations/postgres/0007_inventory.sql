-- Inventory (CONTRACT.md, "Inventory"): finding a key's jobs by creation time and label, and
-- retention, which removes finished jobs and leaves a tombstone.
--
-- `job_index` and `job_labels` follow the log: a trigger fills them from each job's `created`
-- event (its version 1), whoever writes it and however (creation, a group commit, by hand). They
-- only change when a prune removes a job. Replay does not rebuild them: they are not part of the
-- projection, and nothing but the log and a prune ever writes them.
--
-- Listings order job ids byte by byte (COLLATE "C" in the indexes they read, and in the queries),
-- as SQLite and the memory store compare them, whatever the database's collation. The columns
-- keep the default collation of `jobs.job_id`, so joins to `jobs` use its primary key.

CREATE TABLE job_index (
    job_id     TEXT        PRIMARY KEY,
    owner      TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    -- the `created` event's labels object, NULL when it has none
    labels     JSONB
);

-- A key's jobs newest first, and a page below a cursor, are one range of this index.
CREATE INDEX job_index_by_owner ON job_index (owner, created_at, job_id COLLATE "C");
-- A prune looks at the oldest jobs first: a job finished before a cutoff was created before it.
CREATE INDEX job_index_by_age ON job_index (created_at);

-- One row per label of a job, in the order a `label=key:value` listing reads them.
CREATE TABLE job_labels (
    owner      TEXT        NOT NULL,
    key        TEXT        NOT NULL,
    value      TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    job_id     TEXT        NOT NULL
);

-- Its key (a primary key cannot name a collation).
CREATE UNIQUE INDEX job_labels_by_value ON job_labels (owner, key, value, created_at,
                                                       job_id COLLATE "C");

-- What stays of a pruned job: its id is never given out again; its owner hears 410, others 403.
-- `seq` lets every server forget, in memory, what it held of a job pruned by anyone: prunes take
-- one advisory lock until COMMIT (store/postgres/inventory.py), so tombstones become visible in
-- `seq` order and a reader's cursor never passes one still to come.
CREATE TABLE job_tombstones (
    seq         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      TEXT        NOT NULL UNIQUE,
    owner       TEXT        NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    pruned_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A `created` event's labels: its "labels" object, or NULL (no labels, or anything but an object:
-- the trigger must never be what refuses an append).
CREATE FUNCTION created_labels(data JSONB) RETURNS JSONB LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(data -> 'labels') = 'object' THEN data -> 'labels' END
$$;

-- Nothing is indexed of a `created` event without an owner (only a hand-written one lacks it).
CREATE FUNCTION index_created_job() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.data ->> 'owner' IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO job_index (job_id, owner, created_at, labels)
    VALUES (NEW.job_id, NEW.data ->> 'owner', NEW.recorded_at, created_labels(NEW.data))
    ON CONFLICT DO NOTHING;
    INSERT INTO job_labels (owner, key, value, created_at, job_id)
    SELECT NEW.data ->> 'owner', label.key, label.value, NEW.recorded_at, NEW.job_id
    FROM jsonb_each_text(created_labels(NEW.data)) AS label
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;

-- Creating the trigger locks `events` against writers until this migration commits, so the
-- backfill below and the rows the trigger writes afterwards neither overlap nor leave a gap.
-- The WHEN clause keeps every other event (all but one per job) free of the trigger's cost.
CREATE TRIGGER job_index_on_create AFTER INSERT ON events
    FOR EACH ROW WHEN (NEW.version = 1 AND NEW.type = 'created')
    EXECUTE FUNCTION index_created_job();

INSERT INTO job_index (job_id, owner, created_at, labels)
SELECT job_id, data ->> 'owner', recorded_at, created_labels(data)
FROM events
WHERE version = 1 AND type = 'created' AND data ->> 'owner' IS NOT NULL;

INSERT INTO job_labels (owner, key, value, created_at, job_id)
SELECT e.data ->> 'owner', label.key, label.value, e.recorded_at, e.job_id
FROM events AS e, jsonb_each_text(created_labels(e.data)) AS label
WHERE e.version = 1 AND e.type = 'created' AND e.data ->> 'owner' IS NOT NULL;

-- The log stays append-only: the one exception is a prune, which deletes the events of a job
-- only after leaving its tombstone. Every other DELETE is refused as before; UPDATE and TRUNCATE
-- always are.
DROP TRIGGER events_refuse_update_delete ON events;

CREATE TRIGGER events_refuse_update BEFORE UPDATE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

CREATE FUNCTION events_refuse_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM job_tombstones WHERE job_id = OLD.job_id) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'events is append-only: DELETE is refused (only a prune deletes)';
END
$$;

CREATE TRIGGER events_refuse_delete BEFORE DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_delete();
