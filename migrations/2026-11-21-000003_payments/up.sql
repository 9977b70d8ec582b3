-- Payments (crates/payments, bins/webhook-receiver). Credits are BIGINT thousandths of
-- a credit, money BIGINT cents, instants BIGINT milliseconds since the Unix epoch (UTC).

-- Secrets the programs make for themselves (the demo webhook signing secret).
CREATE TABLE payment_secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Checkouts we created (Polar's id, or our own for demo checkouts).
CREATE TABLE payment_checkouts (
    id          TEXT PRIMARY KEY,
    provider    TEXT NOT NULL,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    pack_id     TEXT NOT NULL,
    credits     BIGINT NOT NULL,
    price_cents BIGINT NOT NULL,
    url         TEXT NOT NULL,
    status      TEXT NOT NULL,
    order_id    TEXT,
    created_at  BIGINT NOT NULL,
    paid_at     BIGINT
);

-- Every verified webhook delivery, stored before it is processed (webhook-id is unique).
CREATE TABLE webhook_deliveries (
    webhook_id   TEXT PRIMARY KEY,
    event_type   TEXT NOT NULL,
    body         TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    attempts     BIGINT NOT NULL DEFAULT 0,
    processed_at BIGINT,
    outcome      TEXT
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (received_at) WHERE processed_at IS NULL;

-- One row per provider order: the business key of exactly-once crediting. Every event
-- about an order locks this row first.
CREATE TABLE payment_orders (
    order_id        TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    account_id      TEXT,
    pack_id         TEXT,
    paid_cents      BIGINT,
    credits         BIGINT NOT NULL DEFAULT 0,
    credit_entry_id TEXT,
    paid_at         BIGINT,
    refunded_cents  BIGINT NOT NULL DEFAULT 0,
    clawed_back     BIGINT NOT NULL DEFAULT 0 CHECK (clawed_back >= 0),
    owed            BIGINT NOT NULL DEFAULT 0 CHECK (owed >= 0),
    version         BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX payment_orders_owed ON payment_orders (account_id) WHERE owed > 0;

-- Succeeded refunds seen through refund.* events (refund id is unique).
CREATE TABLE payment_refunds (
    refund_id    TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL,
    amount_cents BIGINT NOT NULL CHECK (amount_cents >= 0),
    created_at   BIGINT NOT NULL
);
CREATE INDEX payment_refunds_by_order ON payment_refunds (order_id);

-- Auto top-up settings, one row per account.
CREATE TABLE auto_topups (
    account_id    TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    enabled       BOOLEAN NOT NULL,
    threshold     BIGINT NOT NULL CHECK (threshold >= 0),
    pack_id       TEXT NOT NULL,
    credits       BIGINT NOT NULL,
    price_cents   BIGINT NOT NULL,
    status        TEXT NOT NULL,
    paused_reason TEXT,
    updated_at    BIGINT NOT NULL
);

-- Top-up charges; at most one pending per account (the partial unique index).
CREATE TABLE auto_topup_charges (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    pack_id     TEXT NOT NULL,
    credits     BIGINT NOT NULL,
    price_cents BIGINT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT,
    created_at  BIGINT NOT NULL,
    settled_at  BIGINT
);
CREATE UNIQUE INDEX auto_topup_charges_one_pending ON auto_topup_charges (account_id) WHERE status = 'pending';
