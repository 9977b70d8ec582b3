-- Issue 11: the balance in one indexed read. Every writer of a book already locks its
-- account row (`version = version + 1`); that lock now also clears `balance_until`, and the
-- ledger's write path sets these columns from the book it wrote, in the same transaction.
-- A reader trusts them while `balance_at <= now < balance_until` (nothing in the book
-- changes by time alone before `balance_until`: no grant starts or expires, no hold
-- expires) and folds the book otherwise. 0 in `balance_until`: not known, fold.
ALTER TABLE accounts ADD COLUMN available BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN held BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN balance_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE accounts ADD COLUMN balance_until BIGINT NOT NULL DEFAULT 0;
