-- The name of the gateway key that sent a job (issue 10), from the Result's metadata
-- (`gateway_key`); NULL for jobs sent over NATS directly. Per-key budgets build on it.
ALTER TABLE routing_decisions ADD COLUMN IF NOT EXISTS api_key_name TEXT;
CREATE INDEX IF NOT EXISTS routing_decisions_api_key_name_idx ON routing_decisions (api_key_name);
