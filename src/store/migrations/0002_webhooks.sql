-- Webhooks, version 2. Portable like 0001 (TEXT, BIGINT, no autoincrement, no booleans, JSON
-- as TEXT). Times are unix milliseconds.

-- Events, written in the same transaction as the change they report (the durable outbox).
-- Independent of the hooks: `fanned_out` becomes 1 once the event is turned into one delivery
-- per matching hook.
CREATE TABLE webhook_outbox (
    id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    registry TEXT NOT NULL,
    payload TEXT NOT NULL,
    created BIGINT NOT NULL,
    fanned_out BIGINT NOT NULL
);
CREATE INDEX webhook_outbox_pending ON webhook_outbox (fanned_out, created);

-- Hooks; `registry` NULL: every registry; `events` a JSON array, empty: every event. The
-- secret is kept (it signs) and never returned.
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    registry TEXT,
    events TEXT NOT NULL,
    created BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

-- One event for one hook. `claimed_by`/`claimed_until` make a node's claim exclusive.
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    hook TEXT NOT NULL,
    outbox TEXT NOT NULL,
    event TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT,
    created BIGINT NOT NULL,
    last_attempt BIGINT,
    finished BIGINT,
    claimed_by TEXT,
    claimed_until BIGINT NOT NULL,
    UNIQUE (hook, outbox)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_attempt);
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (hook, created);

-- Every attempt of a delivery.
CREATE TABLE webhook_attempts (
    delivery TEXT NOT NULL,
    n BIGINT NOT NULL,
    at BIGINT NOT NULL,
    status BIGINT,
    error TEXT,
    millis BIGINT NOT NULL,
    PRIMARY KEY (delivery, n)
);
