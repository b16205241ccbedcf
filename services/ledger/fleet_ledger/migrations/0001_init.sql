-- The ledger's first schema. `routing_decisions` keeps every column of the seed's table
-- (same names, same meaning; times in unix seconds, durations in seconds) and adds the
-- fleet's columns after them. One row per job: job_id is the idempotency key.

CREATE TABLE routing_decisions (
    id              BIGSERIAL PRIMARY KEY,
    "timestamp"     DOUBLE PRECISION,   -- unix seconds of the job's first routing decision
    objective       TEXT,
    task_type       TEXT,
    complexity      INTEGER,
    selected_model  TEXT,
    reasoning       TEXT,
    estimated_cost  DOUBLE PRECISION,   -- USD
    actual_cost     DOUBLE PRECISION,   -- USD, every attempt of the job
    execution_time  DOUBLE PRECISION,   -- seconds
    estimated_time  DOUBLE PRECISION,   -- seconds
    success         BOOLEAN,
    tokens_used     INTEGER,            -- tokens_in + tokens_out
    job_id          TEXT NOT NULL UNIQUE,
    provider        TEXT,
    error_code      TEXT,
    error_message   TEXT,
    tokens_in       INTEGER,
    tokens_out      INTEGER,
    attempts_count  INTEGER,
    finished_at     DOUBLE PRECISION,   -- unix seconds; NULL until the job's Result arrives
    -- attempt_no of the newest Decision applied; decides which of two decisions is newer
    decision_attempt_no INTEGER
);

CREATE INDEX routing_decisions_timestamp_idx ON routing_decisions ("timestamp");
CREATE INDEX routing_decisions_selected_model_idx ON routing_decisions (selected_model);
CREATE INDEX routing_decisions_task_type_idx ON routing_decisions (task_type);

-- One row per provider call, from AttemptRecord events and from Result.attempts.
CREATE TABLE attempts (
    job_id          TEXT NOT NULL,
    attempt_no      INTEGER NOT NULL,
    model           TEXT NOT NULL,
    provider        TEXT NOT NULL,
    success         BOOLEAN NOT NULL,
    error_code      TEXT,
    error_message   TEXT,
    latency_ms      DOUBLE PRECISION NOT NULL DEFAULT 0,
    tokens_in       INTEGER NOT NULL DEFAULT 0,
    tokens_out      INTEGER NOT NULL DEFAULT 0,
    cost_usd        DOUBLE PRECISION NOT NULL DEFAULT 0,
    at              DOUBLE PRECISION NOT NULL,  -- unix seconds the attempt finished
    PRIMARY KEY (job_id, attempt_no)
);

CREATE INDEX attempts_at_idx ON attempts (at);
CREATE INDEX attempts_model_idx ON attempts (model);
