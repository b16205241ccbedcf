-- Per-attempt details from the providers (issue 3): time to first token, cached and
-- reasoning tokens, the router's estimate before dispatch, and truncation at the token limit.
ALTER TABLE attempts
    ADD COLUMN IF NOT EXISTS ttft_ms DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS cached_tokens_in INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reasoning_tokens INTEGER NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS estimated_cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS truncated BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE routing_decisions ADD COLUMN IF NOT EXISTS truncated BOOLEAN;
