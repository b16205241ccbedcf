-- Users' scores of answers (issue 11 item 7), from <p>.feedback. One row per message:
-- msg_id is the publisher's Nats-Msg-Id, else '<stream>:<sequence>', so a redelivered
-- message is written once. No foreign key on job_id: feedback may arrive before the job's
-- row (the two consumers commit independently), and a score of an unknown job is kept.
CREATE TABLE IF NOT EXISTS feedback (
    msg_id     TEXT PRIMARY KEY,
    job_id     TEXT NOT NULL,
    score      DOUBLE PRECISION NOT NULL,
    comment    TEXT NOT NULL DEFAULT '',
    at         DOUBLE PRECISION NOT NULL  -- unix seconds the stream stored the message
);

CREATE INDEX IF NOT EXISTS feedback_job_idx ON feedback (job_id);
CREATE INDEX IF NOT EXISTS feedback_at_idx ON feedback (at);
