-- A created job's inventory (`job_index`, `job_labels`) is filed by the write that creates it
-- (`store/sqlite/group.py`, `Rows._file_created`), as PostgreSQL's `file_created_job` does: the
-- AFTER INSERT trigger of 0007 ran its WHEN for every event appended, about a twentieth of what
-- an SDK row's append costs, to act on one event per job.
DROP TRIGGER IF EXISTS log_job_index_on_create;
