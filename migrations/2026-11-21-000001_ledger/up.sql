-- The ledger. Credits are BIGINT thousandths of a credit; instants are BIGINT
-- milliseconds since the Unix epoch (UTC). Both backends use the same types.
CREATE TABLE accounts (
    id                TEXT PRIMARY KEY,
    email             TEXT UNIQUE,
    password_hash     TEXT,
    created_at        BIGINT NOT NULL,
    balance           BIGINT NOT NULL DEFAULT 0,
    overdraft         BIGINT NOT NULL DEFAULT 0 CHECK (overdraft >= 0),
    overdraft_limit   BIGINT NOT NULL DEFAULT 0 CHECK (overdraft_limit >= 0),
    last_seq          BIGINT NOT NULL DEFAULT 0,
    compacted_balance BIGINT NOT NULL DEFAULT 0,
    compacted_seq     BIGINT NOT NULL DEFAULT 0,
    plan_name         TEXT,
    version           BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE grants (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    source       TEXT NOT NULL,
    amount       BIGINT NOT NULL CHECK (amount > 0),
    remaining    BIGINT NOT NULL CHECK (remaining >= 0 AND remaining <= amount),
    priority     BIGINT NOT NULL,
    effective_at BIGINT NOT NULL,
    expires_at   BIGINT,
    created_at   BIGINT NOT NULL
);
CREATE INDEX grants_open ON grants (account_id) WHERE remaining > 0;

CREATE TABLE holds (
    id           TEXT PRIMARY KEY,
    account_id   TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    amount       BIGINT NOT NULL CHECK (amount > 0),
    captured     BIGINT NOT NULL DEFAULT 0 CHECK (captured >= 0 AND captured <= amount),
    status       TEXT NOT NULL,
    description  TEXT NOT NULL,
    reference_id TEXT,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    settled_at   BIGINT,
    allocations  TEXT NOT NULL
);
CREATE INDEX holds_active ON holds (account_id) WHERE status = 'active';

CREATE TABLE entries (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    seq           BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    amount        BIGINT NOT NULL,
    balance_after BIGINT NOT NULL,
    description   TEXT NOT NULL,
    reference_id  TEXT,
    source        TEXT NOT NULL,
    plan          TEXT,
    created_at    BIGINT NOT NULL,
    hold_id       TEXT,
    refund_of     TEXT,
    allocations   TEXT NOT NULL,
    UNIQUE (account_id, seq)
);
CREATE INDEX entries_by_time ON entries (account_id, created_at);
CREATE INDEX entries_refund_of ON entries (refund_of) WHERE refund_of IS NOT NULL;

CREATE TABLE idempotency_keys (
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (account_id, scope, key)
);
