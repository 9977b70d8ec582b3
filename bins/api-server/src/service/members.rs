//! The members of an account: invitations, signing up with one, listing and removing
//! members. Only owners invite and remove ([`require_owner`]); anyone in the account lists.

use ledger_core::Role;
use ledger_store::{Invite, Member, MemberRefusal};

use crate::auth::{hash_password, new_session_token, sha256_hex, Authed};
use crate::error::ApiError;
use crate::service::accounts::{valid_email, valid_password, LoggedIn};
use crate::state::AppState;

/// How long an invitation token works (7 days).
pub const INVITE_TTL_SECS: i64 = 7 * 24 * 3600;

/// The readable prefix of invitation tokens.
pub const INVITE_PREFIX: &str = "inv_";

/// 403 `OWNER_ONLY` unless the caller is an owner of the account.
pub fn require_owner(who: &Authed) -> Result<(), ApiError> {
    if who.role.manages_billing() {
        Ok(())
    } else {
        Err(ApiError::owner_only())
    }
}

/// `owner` or `member`; anything else is a 400 naming `role`.
pub fn parse_role(role: &str) -> Result<Role, ApiError> {
    Role::parse(role.trim())
        .ok_or_else(|| ApiError::invalid("role", "role must be \"owner\" or \"member\""))
}

fn refused(refusal: MemberRefusal) -> ApiError {
    match refusal {
        MemberRefusal::EmailTaken { email } => ApiError::Conflict {
            code: "EMAIL_TAKEN",
            message: format!(
                "{email} already has a login; one email belongs to one login across the service"
            ),
        },
        MemberRefusal::InvalidInvite => ApiError::BadInvite(
            "inviteToken is unknown, already used or expired (invitations work once, for 7 days); \
             ask an owner of the account for a new invitation"
                .into(),
        ),
        MemberRefusal::WrongEmail { invited } => ApiError::invalid(
            "email",
            format!(
                "This invitation is for {invited}: sign up with that email, or ask an owner \
                 to invite the address you want"
            ),
        ),
        MemberRefusal::NotFound => ApiError::NotFound("Member not found".into()),
        MemberRefusal::LastOwner => ApiError::Conflict {
            code: "LAST_OWNER",
            message: "The account's last owner cannot be removed; invite another owner first \
                      (POST /api/v1/members with role \"owner\")"
                .into(),
        },
    }
}

/// Invites `email` with `role` (owners only): the invitation and its token, shown once.
pub async fn invite(
    state: &AppState,
    who: &Authed,
    email: &str,
    role: &str,
) -> Result<(Invite, String), ApiError> {
    require_owner(who)?;
    let email = valid_email(email)?;
    let role = parse_role(role)?;
    let token = format!("{INVITE_PREFIX}{}", new_session_token()?);
    let hash = sha256_hex(&token);
    let now = state.now();
    let expires = now.plus_secs(INVITE_TTL_SECS);
    let account = who.account_id.clone();
    let invite = state
        .blocking(move |s| {
            Ok(s.members()
                .invite(&account, &email, role, &hash, now, expires)?)
        })
        .await?
        .map_err(refused)?;
    Ok((invite, token))
}

/// The account's members, oldest first (pending invitations are not members).
pub async fn list(state: &AppState, who: &Authed) -> Result<Vec<Member>, ApiError> {
    let account = who.account_id.clone();
    state
        .blocking(move |s| Ok(s.members().list(&account)?))
        .await
}

/// Removes a member (owners only); their sessions and keys stop working at once.
pub async fn remove(state: &AppState, who: &Authed, id: String) -> Result<(), ApiError> {
    require_owner(who)?;
    let (account, now) = (who.account_id.clone(), state.now());
    state
        .blocking(move |s| Ok(s.members().remove(&account, &id, now)?))
        .await?
        .map_err(refused)?;
    Ok(())
}

/// Signs up with an invitation: joins the inviting account with the invited role (no new
/// account, no signup bonus) and logs in.
pub async fn join(
    state: &AppState,
    email: &str,
    password: &str,
    token: &str,
) -> Result<LoggedIn, ApiError> {
    let email = valid_email(email)?;
    valid_password(password)?;
    let token = token.trim();
    if !token.starts_with(INVITE_PREFIX) || token.contains('\0') {
        return Err(refused(MemberRefusal::InvalidInvite));
    }
    let hash = sha256_hex(token);
    let password = password.to_owned();
    let now = state.now();
    let (member, account, balance) = state
        .blocking(move |s| {
            let password_hash = hash_password(&password)?;
            let member = match s.members().join(&hash, &email, &password_hash, now)? {
                Ok(m) => m,
                Err(refusal) => return Err(refused(refusal)),
            };
            let account = s
                .ledger()
                .account(&member.account_id)?
                .ok_or(ApiError::UserNotFound)?;
            let balance = s.ledger().balance(&account.id, now)?.available;
            Ok((member, account, balance))
        })
        .await?;
    LoggedIn::start(state, account, member, balance).await
}
