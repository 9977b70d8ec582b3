DROP TABLE idempotency_keys;
DROP TABLE entries;
DROP TABLE holds;
DROP TABLE grants;
DROP TABLE accounts;
