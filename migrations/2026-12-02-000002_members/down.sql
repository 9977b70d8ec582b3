DROP INDEX api_keys_member;
DROP INDEX sessions_member;
ALTER TABLE api_keys DROP COLUMN member_id;
ALTER TABLE sessions DROP COLUMN member_id;
DROP TABLE member_invites;
DROP TABLE members;
