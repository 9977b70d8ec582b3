-- Issue 10: an account has members (logins), each `owner` or `member`. The person who signs
-- up is the owner; owners invite members with a single-use token. Sessions and API keys
-- belong to a member, so removing one revokes exactly that member's sessions and keys.

CREATE TABLE members (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email         TEXT NOT NULL,
    password_hash TEXT,
    role          TEXT NOT NULL CHECK (role IN ('owner', 'member')),
    created_at    BIGINT NOT NULL,
    removed_at    BIGINT
);
-- An email is one login across the service (as accounts' emails are); a removed member's
-- address may be invited again.
CREATE UNIQUE INDEX members_live_email ON members (email) WHERE removed_at IS NULL;
CREATE INDEX members_account ON members (account_id);

-- Every existing account with a login becomes its own owner (same email and password).
INSERT INTO members (id, account_id, email, password_hash, role, created_at)
SELECT 'mem_' || id, id, email, password_hash, 'owner', created_at
FROM accounts
WHERE email IS NOT NULL;

-- Invitations: only the SHA-256 of the token is kept; single-use (`used_at`), expiring.
-- The member who signs up with one gets the invite's id.
CREATE TABLE member_invites (
    id          TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email       TEXT NOT NULL,
    role        TEXT NOT NULL CHECK (role IN ('owner', 'member')),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX member_invites_account ON member_invites (account_id);

-- The member a session or key belongs to (the account's owner for existing ones). NULL
-- only for rows made without a login (store-level callers).
ALTER TABLE sessions ADD COLUMN member_id TEXT;
ALTER TABLE api_keys ADD COLUMN member_id TEXT;
UPDATE sessions SET member_id = (
    SELECT m.id FROM members m WHERE m.account_id = sessions.account_id AND m.role = 'owner'
);
UPDATE api_keys SET member_id = (
    SELECT m.id FROM members m WHERE m.account_id = api_keys.account_id AND m.role = 'owner'
);
CREATE INDEX sessions_member ON sessions (member_id);
CREATE INDEX api_keys_member ON api_keys (member_id);
