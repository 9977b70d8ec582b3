-- Screenshot requests made with an Idempotency-Key: a replay answers from here.
CREATE TABLE screenshot_requests (
    account_id      TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    idempotency_key TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    state           TEXT NOT NULL,
    status_code     BIGINT,
    content_type    TEXT,
    object          TEXT,
    error_body      TEXT,
    charged         BIGINT NOT NULL DEFAULT 0,
    cache_status    TEXT,
    screenshot_id   TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    PRIMARY KEY (account_id, idempotency_key)
);
