DROP TABLE screenshot_requests;
