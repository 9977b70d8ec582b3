DROP TABLE auto_topup_charges;
DROP TABLE auto_topups;
DROP TABLE payment_refunds;
DROP TABLE payment_orders;
DROP TABLE webhook_deliveries;
DROP TABLE payment_checkouts;
DROP TABLE payment_secrets;
