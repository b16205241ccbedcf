-- A/B experiments and shadow traffic (issue 11, item 5): the experiment a job was in and
-- its variant (from the router's Decision; 'shadow' for a shadow copy), and, for a shadow
-- copy, the job it copied. NULL for jobs in no experiment and rows written before this.
ALTER TABLE routing_decisions
    ADD COLUMN IF NOT EXISTS experiment TEXT,
    ADD COLUMN IF NOT EXISTS variant TEXT,
    ADD COLUMN IF NOT EXISTS shadow_of TEXT;

CREATE INDEX IF NOT EXISTS routing_decisions_experiment_idx ON routing_decisions (experiment) WHERE experiment IS NOT NULL;
