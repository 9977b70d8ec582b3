-- Issue 10 (ADR 9): plans persisted. A subscription snapshots its plan's terms and keeps
-- its billing period; each period's allowance is granted exactly once (the primary key of
-- plan_periods); every billed block of extra is one overage item.

-- The plan's terms as they were when the subscription was set (milli-credits, cents).
ALTER TABLE subscriptions ADD COLUMN plan_name TEXT;
ALTER TABLE subscriptions ADD COLUMN monthly_credits BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN price_cents BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN overage_cents_per_1000 BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN paying BOOLEAN NOT NULL DEFAULT FALSE;
-- Periods are whole calendar months counted from the anchor; start and end stay null
-- until the first period starts.
ALTER TABLE subscriptions ADD COLUMN period_anchor BIGINT;
ALTER TABLE subscriptions ADD COLUMN period_start BIGINT;
ALTER TABLE subscriptions ADD COLUMN period_end BIGINT;
-- 'operator' (admin API) or 'polar' (provider-managed, a later part).
ALTER TABLE subscriptions ADD COLUMN managed_by TEXT NOT NULL DEFAULT 'operator';
ALTER TABLE subscriptions ADD COLUMN provider_subscription_id TEXT;
ALTER TABLE subscriptions ADD COLUMN provider_modified_at BIGINT;
CREATE INDEX subscriptions_period_end ON subscriptions (period_end);

-- One row per account and period: inserting it is the exactly-once guard of the period's
-- allowance, whichever process tries.
CREATE TABLE plan_periods (
    account_id        TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    period_start      BIGINT NOT NULL,
    period_end        BIGINT NOT NULL,
    plan_id           TEXT NOT NULL,
    allowance         BIGINT NOT NULL,
    extra_written_off BIGINT NOT NULL DEFAULT 0,
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (account_id, period_start)
);

-- Billed blocks of extra: +1 billed, -1 credited back after a refund. The id comes from
-- the account, the period and the item's ordinal, so a retry gives the same id.
CREATE TABLE overage_items (
    id              TEXT PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    period_start    BIGINT NOT NULL,
    ordinal         BIGINT NOT NULL,
    blocks          BIGINT NOT NULL,
    credits         BIGINT NOT NULL,
    amount_cents    BIGINT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    next_attempt_at BIGINT,
    created_at      BIGINT NOT NULL,
    reported_at     BIGINT,
    UNIQUE (account_id, period_start, ordinal)
);
CREATE INDEX overage_items_pending ON overage_items (status, next_attempt_at);
