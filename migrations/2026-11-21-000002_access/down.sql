DROP TABLE account_limits;
DROP TABLE subscriptions;
DROP TABLE api_keys;
DROP TABLE sessions;
