DROP TABLE payment_refusals;
ALTER TABLE payment_checkouts DROP COLUMN currency;
ALTER TABLE payment_checkouts DROP COLUMN product_id;
