-- Issue 8: a paid order is credited from our own checkout record, and an order that does
-- not match it is refused and kept here for an operator (never credited, never lost).

-- What we asked the provider to sell: the product and the currency of the checkout, so a
-- paid order can be checked against them.
ALTER TABLE payment_checkouts ADD COLUMN product_id TEXT;
ALTER TABLE payment_checkouts ADD COLUMN currency TEXT;

-- Paid orders that were refused (one row per provider order id): why, what our checkout
-- record said, and the order as the provider sent it. Operators read them with
-- `webhook-receiver refused`.
CREATE TABLE payment_refusals (
    order_id      TEXT PRIMARY KEY,
    source        TEXT NOT NULL,
    reason        TEXT NOT NULL,
    checkout_id   TEXT,
    account_id    TEXT,
    order_json    TEXT NOT NULL,
    first_seen_at BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    times_seen    BIGINT NOT NULL DEFAULT 1
);
