//! The members of an account: its logins, each an `owner` or a `member`, and the
//! invitations that let a new login join an account (`store.members()`).
//!
//! The person who signs up is the account's owner (`create_account` adds them). Sessions
//! and API keys made through a login carry its member id, so removing a member revokes
//! exactly that member's sessions and keys, in the same transaction.
//!
//! Refusals a caller can act on (an email that already has a login, a used or expired
//! invitation, the last owner) come back as [`MemberRefusal`] inside `Ok`: nothing changed.

use diesel::prelude::*;
use ledger_core::{AccountId, Role, Timestamp};

use crate::access::{ApiKey, NewApiKey};
use crate::error::StoreError;
use crate::ids::new_id;
use crate::ledger::TxError;
use crate::schema::{accounts, api_keys, member_invites, members, sessions};
use crate::Store;

/// The prefix of member ids (an invitation's id becomes its member's id).
pub const MEMBER_PREFIX: &str = "mem_";

/// A live login of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub account_id: AccountId,
    pub email: String,
    pub role: Role,
    pub created_at: Timestamp,
}

/// A member with what is needed to check a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub member: Member,
    pub password_hash: Option<String>,
}

/// A pending invitation (the token itself is never stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    /// Also the id of the member who accepts it.
    pub id: String,
    pub account_id: AccountId,
    pub email: String,
    pub role: Role,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Who holds a session or key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Made without a login (store-level callers): it acts as the account itself.
    Account,
    /// A live member.
    Member(Member),
    /// A member who was removed: the credential must not work.
    Removed,
}

/// Why a member operation was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberRefusal {
    #[error("{email} already has a login")]
    EmailTaken { email: String },
    #[error("the invitation is unknown, used or expired")]
    InvalidInvite,
    #[error("the invitation is for {invited}")]
    WrongEmail { invited: String },
    #[error("no such member")]
    NotFound,
    #[error("the account's last owner cannot be removed")]
    LastOwner,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = members)]
struct MemberRow {
    id: String,
    account_id: String,
    email: String,
    password_hash: Option<String>,
    role: String,
    created_at: i64,
}

impl MemberRow {
    fn into_login(self) -> Result<Login, StoreError> {
        let role = Role::parse(&self.role).ok_or_else(|| {
            StoreError::corrupt(format!("member {}: role {}", self.id, self.role))
        })?;
        Ok(Login {
            member: Member {
                id: self.id,
                account_id: AccountId::new(self.account_id),
                email: self.email,
                role,
                created_at: Timestamp::from_millis(self.created_at),
            },
            password_hash: self.password_hash,
        })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = member_invites)]
struct InviteRow {
    id: String,
    account_id: String,
    email: String,
    role: String,
    created_at: i64,
    expires_at: i64,
}

impl TryFrom<InviteRow> for Invite {
    type Error = StoreError;
    fn try_from(r: InviteRow) -> Result<Invite, StoreError> {
        Ok(Invite {
            role: Role::parse(&r.role)
                .ok_or_else(|| StoreError::corrupt(format!("invite {}: role {}", r.id, r.role)))?,
            id: r.id,
            account_id: AccountId::new(r.account_id),
            email: r.email,
            created_at: Timestamp::from_millis(r.created_at),
            expires_at: Timestamp::from_millis(r.expires_at),
        })
    }
}

type Refusable<T> = Result<Result<T, MemberRefusal>, TxError>;

/// Adds the owner of a new account (inside its creation's transaction).
pub(crate) fn add_owner(
    conn: &mut crate::db::DbConnection,
    account: &str,
    email: &str,
    password_hash: Option<&str>,
    now: Timestamp,
) -> Result<(), TxError> {
    diesel::insert_into(members::table)
        .values((
            members::id.eq(new_id(MEMBER_PREFIX)),
            members::account_id.eq(account),
            members::email.eq(email),
            members::password_hash.eq(password_hash),
            members::role.eq(Role::Owner.as_str()),
            members::created_at.eq(now.millis()),
        ))
        .execute(conn)?;
    Ok(())
}

/// True when `email` is a live member's or an account's address.
fn email_taken(conn: &mut crate::db::DbConnection, email: &str) -> Result<bool, TxError> {
    let member: i64 = members::table
        .filter(members::email.eq(email))
        .filter(members::removed_at.is_null())
        .count()
        .get_result(conn)?;
    let account: i64 = accounts::table
        .filter(accounts::email.eq(email))
        .count()
        .get_result(conn)?;
    Ok(member + account > 0)
}

fn live_member(conn: &mut crate::db::DbConnection, id: &str) -> Result<Option<Login>, StoreError> {
    members::table
        .filter(members::id.eq(id))
        .filter(members::removed_at.is_null())
        .select(MemberRow::as_select())
        .first(conn)
        .optional()?
        .map(MemberRow::into_login)
        .transpose()
}

/// A member read together with a credential that names it (one query: the credential
/// left-joined to `members`): who holds it, without its password hash.
#[derive(Queryable, Selectable)]
#[diesel(table_name = members)]
pub(crate) struct HolderRow {
    id: String,
    account_id: String,
    email: String,
    role: String,
    created_at: i64,
    removed_at: Option<i64>,
}

/// Who holds a credential whose `member_id` is `member_id`, from the [`HolderRow`] joined
/// to it: no member id is the account itself; a member id whose row is missing or removed is
/// [`Holder::Removed`].
pub(crate) fn joined_holder(
    member_id: Option<String>,
    row: Option<HolderRow>,
) -> Result<Holder, StoreError> {
    if member_id.is_none() {
        return Ok(Holder::Account);
    }
    let Some(row) = row.filter(|r| r.removed_at.is_none()) else {
        return Ok(Holder::Removed);
    };
    let role = Role::parse(&row.role)
        .ok_or_else(|| StoreError::corrupt(format!("member {}: role {}", row.id, row.role)))?;
    Ok(Holder::Member(Member {
        id: row.id,
        account_id: AccountId::new(row.account_id),
        email: row.email,
        role,
        created_at: Timestamp::from_millis(row.created_at),
    }))
}

/// Members and invitations: `store.members()`.
#[derive(Debug, Clone, Copy)]
pub struct Members<'a> {
    store: &'a Store,
}

impl Store {
    /// Members and invitations.
    pub fn members(&self) -> Members<'_> {
        Members { store: self }
    }
}

impl Members<'_> {
    /// The live login with this (already normalised) email.
    pub fn login(&self, email: &str) -> Result<Option<Login>, StoreError> {
        let mut conn = self.store.conn()?;
        members::table
            .filter(members::email.eq(email))
            .filter(members::removed_at.is_null())
            .select(MemberRow::as_select())
            .first(&mut *conn)
            .optional()?
            .map(MemberRow::into_login)
            .transpose()
    }

    /// A live member by id.
    pub fn member(&self, id: &str) -> Result<Option<Member>, StoreError> {
        let mut conn = self.store.conn()?;
        Ok(live_member(&mut conn, id)?.map(|l| l.member))
    }

    /// The account's live members, oldest first.
    pub fn list(&self, account: &AccountId) -> Result<Vec<Member>, StoreError> {
        let mut conn = self.store.conn()?;
        members::table
            .filter(members::account_id.eq(account.as_str()))
            .filter(members::removed_at.is_null())
            .order((members::created_at.asc(), members::id.asc()))
            .select(MemberRow::as_select())
            .load(&mut *conn)?
            .into_iter()
            .map(|r| r.into_login().map(|l| l.member))
            .collect()
    }

    /// Invites `email` into the account with `role`; refused when the email already has a
    /// login. Only the token's hash is stored; it works once, until `expires_at`.
    pub fn invite(
        &self,
        account: &AccountId,
        email: &str,
        role: Role,
        token_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<Result<Invite, MemberRefusal>, StoreError> {
        self.store.write(|conn| -> Refusable<Invite> {
            crate::ledger::lock_account(conn, account)?;
            if email_taken(conn, email)? {
                return Ok(Err(MemberRefusal::EmailTaken {
                    email: email.to_owned(),
                }));
            }
            let id = new_id(MEMBER_PREFIX);
            diesel::insert_into(member_invites::table)
                .values((
                    member_invites::id.eq(&id),
                    member_invites::account_id.eq(account.as_str()),
                    member_invites::email.eq(email),
                    member_invites::role.eq(role.as_str()),
                    member_invites::token_hash.eq(token_hash),
                    member_invites::created_at.eq(now.millis()),
                    member_invites::expires_at.eq(expires_at.millis()),
                ))
                .execute(conn)?;
            Ok(Ok(Invite {
                id,
                account_id: account.clone(),
                email: email.to_owned(),
                role,
                created_at: now,
                expires_at,
            }))
        })
    }

    /// Accepts the invitation whose token hashes to `token_hash`: the new login joins the
    /// inviting account with the invited role (no new account, no bonus), and the
    /// invitation is used up. Refused for an unknown, used or expired token, an email
    /// other than the invited one, or an email that has a login by now.
    pub fn join(
        &self,
        token_hash: &str,
        email: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<Result<Member, MemberRefusal>, StoreError> {
        let result = self.store.write(|conn| -> Refusable<Member> {
            let invite: Option<InviteRow> = member_invites::table
                .filter(member_invites::token_hash.eq(token_hash))
                .filter(member_invites::used_at.is_null())
                .filter(member_invites::expires_at.gt(now.millis()))
                .select(InviteRow::as_select())
                .first(conn)
                .optional()?;
            let Some(invite) = invite else {
                return Ok(Err(MemberRefusal::InvalidInvite));
            };
            let invite = Invite::try_from(invite)?;
            if invite.email != email {
                return Ok(Err(MemberRefusal::WrongEmail {
                    invited: invite.email,
                }));
            }
            crate::ledger::lock_account(conn, &invite.account_id)?;
            // Used up first: of two signups racing with one token, the second finds it
            // used (PostgreSQL re-checks the row after the first commits).
            let used = diesel::update(
                member_invites::table
                    .filter(member_invites::id.eq(&invite.id))
                    .filter(member_invites::used_at.is_null()),
            )
            .set(member_invites::used_at.eq(now.millis()))
            .execute(conn)?;
            if used == 0 {
                return Ok(Err(MemberRefusal::InvalidInvite));
            }
            if email_taken(conn, email)? {
                return Err(TxError(StoreError::EmailTaken {
                    email: email.to_owned(),
                }));
            }
            diesel::insert_into(members::table)
                .values((
                    members::id.eq(&invite.id),
                    members::account_id.eq(invite.account_id.as_str()),
                    members::email.eq(email),
                    members::password_hash.eq(password_hash),
                    members::role.eq(invite.role.as_str()),
                    members::created_at.eq(now.millis()),
                ))
                .execute(conn)?;
            Ok(Ok(Member {
                id: invite.id,
                account_id: invite.account_id,
                email: email.to_owned(),
                role: invite.role,
                created_at: now,
            }))
        });
        match result {
            // Taken since the invitation was made: the token stays unused (rolled back).
            Err(StoreError::EmailTaken { email }) => Ok(Err(MemberRefusal::EmailTaken { email })),
            Err(e) if e.is_unique_violation() => Ok(Err(MemberRefusal::EmailTaken {
                email: email.to_owned(),
            })),
            other => other,
        }
    }

    /// Removes a live member of the account and revokes their sessions and API keys in
    /// the same transaction. The account's last owner cannot be removed.
    pub fn remove(
        &self,
        account: &AccountId,
        member_id: &str,
        now: Timestamp,
    ) -> Result<Result<Member, MemberRefusal>, StoreError> {
        self.store.write(|conn| -> Refusable<Member> {
            crate::ledger::lock_account(conn, account)?;
            let Some(login) = live_member(conn, member_id)? else {
                return Ok(Err(MemberRefusal::NotFound));
            };
            let member = login.member;
            if &member.account_id != account {
                return Ok(Err(MemberRefusal::NotFound));
            }
            if member.role == Role::Owner {
                let owners: i64 = members::table
                    .filter(members::account_id.eq(account.as_str()))
                    .filter(members::role.eq(Role::Owner.as_str()))
                    .filter(members::removed_at.is_null())
                    .count()
                    .get_result(conn)?;
                if owners <= 1 {
                    return Ok(Err(MemberRefusal::LastOwner));
                }
            }
            diesel::update(members::table.filter(members::id.eq(member_id)))
                .set(members::removed_at.eq(now.millis()))
                .execute(conn)?;
            diesel::update(
                sessions::table
                    .filter(sessions::member_id.eq(member_id))
                    .filter(sessions::revoked_at.is_null()),
            )
            .set(sessions::revoked_at.eq(now.millis()))
            .execute(conn)?;
            diesel::update(
                api_keys::table
                    .filter(api_keys::member_id.eq(member_id))
                    .filter(api_keys::revoked_at.is_null()),
            )
            .set(api_keys::revoked_at.eq(now.millis()))
            .execute(conn)?;
            Ok(Ok(member))
        })
    }

    /// Who holds the session whose token hashes to `token_hash` (any session row: the
    /// caller has already checked it is live).
    pub fn session_holder(&self, token_hash: &str) -> Result<Holder, StoreError> {
        let mut conn = self.store.conn()?;
        let member: Option<Option<String>> = sessions::table
            .filter(sessions::token_hash.eq(token_hash))
            .select(sessions::member_id)
            .first(&mut *conn)
            .optional()?;
        holder(&mut conn, member.flatten())
    }

    /// Who holds the API key `key_id`.
    pub fn key_holder(&self, key_id: &str) -> Result<Holder, StoreError> {
        let mut conn = self.store.conn()?;
        let member: Option<Option<String>> = api_keys::table
            .filter(api_keys::id.eq(key_id))
            .select(api_keys::member_id)
            .first(&mut *conn)
            .optional()?;
        holder(&mut conn, member.flatten())
    }

    /// A new session of a member.
    pub fn create_session(
        &self,
        member: &Member,
        token_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let mut conn = self.store.conn()?;
        diesel::insert_into(sessions::table)
            .values((
                sessions::token_hash.eq(token_hash),
                sessions::account_id.eq(member.account_id.as_str()),
                sessions::member_id.eq(&member.id),
                sessions::created_at.eq(now.millis()),
                sessions::expires_at.eq(expires_at.millis()),
            ))
            .execute(&mut *conn)?;
        Ok(())
    }

    /// A new API key of a member (stored only as its hash, with its signing secret).
    pub fn create_api_key(
        &self,
        member: &Member,
        key: &NewApiKey<'_>,
        now: Timestamp,
    ) -> Result<ApiKey, StoreError> {
        crate::access::insert_api_key(self.store, &member.account_id, Some(&member.id), key, now)
    }

    /// A member's own live keys, newest first.
    pub fn api_keys(&self, member: &Member) -> Result<Vec<ApiKey>, StoreError> {
        self.store.records(
            api_keys::table
                .filter(api_keys::account_id.eq(member.account_id.as_str()))
                .filter(api_keys::member_id.eq(&member.id))
                .filter(api_keys::revoked_at.is_null())
                .order((api_keys::created_at.desc(), api_keys::id.desc())),
        )
    }

    /// Revokes one of a member's own keys; false when they have no such live key.
    pub fn revoke_api_key(
        &self,
        member: &Member,
        key_id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut conn = self.store.conn()?;
        let n = diesel::update(
            api_keys::table
                .filter(api_keys::id.eq(key_id))
                .filter(api_keys::account_id.eq(member.account_id.as_str()))
                .filter(api_keys::member_id.eq(&member.id))
                .filter(api_keys::revoked_at.is_null()),
        )
        .set(api_keys::revoked_at.eq(now.millis()))
        .execute(&mut *conn)?;
        Ok(n > 0)
    }
}

fn holder(
    conn: &mut crate::db::DbConnection,
    member: Option<String>,
) -> Result<Holder, StoreError> {
    let Some(id) = member else {
        return Ok(Holder::Account);
    };
    Ok(match live_member(conn, &id)? {
        Some(login) => Holder::Member(login.member),
        None => Holder::Removed,
    })
}
