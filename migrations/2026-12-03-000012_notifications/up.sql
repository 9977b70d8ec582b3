-- Issue 13: notifications to customers (outgoing webhooks, ADR 12). The same SQL on
-- SQLite and PostgreSQL.

-- An account's endpoints. `events` is the subscribed event names, comma-separated;
-- `secret` is the `whsec_...` signing secret (the server signs with it, so it is kept);
-- `next_seq` numbers the endpoint's deliveries, which are sent in that order. Deleting
-- sets `deleted_at` (the deliveries stay listed until pruned).
CREATE TABLE webhook_endpoints (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    url         TEXT NOT NULL,
    events      TEXT NOT NULL,
    secret      TEXT NOT NULL,
    next_seq    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id);

-- An account's balance alerts, with what fired since the balance was last on the other
-- side ("once per crossing"). Written under the account's row lock, by the transaction
-- that wrote the balance. `low_balance_credits` in thousandths of a credit; NULL: off.
CREATE TABLE account_alerts (
    account_id          TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    low_balance_credits BIGINT,
    low_notified        BOOLEAN NOT NULL DEFAULT FALSE,
    depleted_notified   BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at          BIGINT NOT NULL
);

-- The durable outbox: one row per event and endpoint, written in the transaction of the
-- ledger change that caused it. `seq` orders an endpoint's rows; a row is claimed by
-- setting `lease_until` with a conditional update (never two senders at once).
CREATE TABLE notification_deliveries (
    id              TEXT PRIMARY KEY,
    endpoint_id     TEXT NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    account_id      TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    event           TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT NOT NULL DEFAULT 0,
    last_attempt_at BIGINT,
    response_status BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX notification_deliveries_order ON notification_deliveries (endpoint_id, seq);
-- Claiming: the oldest pending row of each endpoint.
CREATE INDEX notification_deliveries_pending ON notification_deliveries (endpoint_id, seq)
    WHERE status = 'pending';
