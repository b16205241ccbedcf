-- Where each job's task type and complexity came from (issue 11): 'given' by the job,
-- 'inferred' by the router from the job's text, or the configured 'default'. NULL for rows
-- written before this migration and for jobs rejected before routing.
ALTER TABLE routing_decisions
    ADD COLUMN IF NOT EXISTS task_type_source TEXT,
    ADD COLUMN IF NOT EXISTS complexity_source TEXT;
