ALTER TABLE api_keys DROP COLUMN signing_secret;
