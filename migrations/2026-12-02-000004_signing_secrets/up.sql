-- Issue 12: signed URLs. Every API key made from now on has a signing secret, returned once
-- at creation; the server keeps it (it must compute the HMAC of every signed URL, ADR 11).
-- Keys made before this migration have none (NULL): their signed URLs are refused with a
-- message saying to create a new key. The same SQL on SQLite and PostgreSQL.
ALTER TABLE api_keys ADD COLUMN signing_secret TEXT;
