ALTER TABLE accounts DROP COLUMN balance_until;
ALTER TABLE accounts DROP COLUMN balance_at;
ALTER TABLE accounts DROP COLUMN held;
ALTER TABLE accounts DROP COLUMN available;
