DROP INDEX notification_deliveries_pending;
DROP INDEX notification_deliveries_order;
DROP TABLE notification_deliveries;
DROP TABLE account_alerts;
DROP INDEX webhook_endpoints_account;
DROP TABLE webhook_endpoints;
