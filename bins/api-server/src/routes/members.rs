//! The members of an account: owners invite and remove, anyone in the account lists.

use actix_web::{delete, get, post, web, HttpResponse};
use ledger_core::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Authed;
use crate::body::JsonBody;
use crate::routes::{AppData, Reply};
use crate::service::members;

/// An invitation to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    pub email: String,
    /// `owner` or `member`.
    pub role: String,
}

/// A new invitation: `inviteToken` appears only here, once; the invited person signs up
/// with it (`POST /api/v1/auth/signup` with `inviteToken`) within 7 days, once.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberInvited {
    /// The member's id once they sign up.
    pub id: String,
    pub email: String,
    pub role: String,
    pub invite_token: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// A member of the account.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberView {
    pub id: String,
    pub email: String,
    pub role: String,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// Invites someone into the account (owners only: 403 `OWNER_ONLY` otherwise). An email
/// that already has a login: 409.
#[utoipa::path(tag = "accounts", request_body = NewMember,
    responses((status = 201, body = MemberInvited), (status = 400, body = crate::wire::ErrorBody),
        (status = 401, body = crate::wire::ErrorBody), (status = 403, body = crate::wire::ErrorBody),
        (status = 409, body = crate::wire::ErrorBody)))]
#[post("/api/v1/members")]
pub async fn invite(state: AppData, who: Authed, body: JsonBody<NewMember>) -> Reply {
    let (invite, token) =
        members::invite(&state, &who, &body.value.email, &body.value.role).await?;
    Ok(HttpResponse::Created().json(MemberInvited {
        id: invite.id,
        email: invite.email,
        role: invite.role.as_str().into(),
        invite_token: token,
        created_at: invite.created_at,
    }))
}

/// The account's members, oldest first (pending invitations are not listed).
#[utoipa::path(tag = "accounts",
    responses((status = 200, body = [MemberView]), (status = 401, body = crate::wire::ErrorBody)))]
#[get("/api/v1/members")]
pub async fn list(state: AppData, who: Authed) -> Reply {
    let view: Vec<MemberView> = members::list(&state, &who)
        .await?
        .into_iter()
        .map(|m| MemberView {
            id: m.id,
            email: m.email,
            role: m.role.as_str().into(),
            created_at: m.created_at,
        })
        .collect();
    Ok(HttpResponse::Ok().json(view))
}

/// Removes a member (owners only); their sessions and API keys stop working at once. The
/// last owner cannot be removed (409 `LAST_OWNER`).
#[utoipa::path(tag = "accounts",
    params(("id" = String, Path, description = "The member's id")),
    responses((status = 204, description = "Removed"), (status = 401, body = crate::wire::ErrorBody),
        (status = 403, body = crate::wire::ErrorBody), (status = 404, body = crate::wire::ErrorBody),
        (status = 409, body = crate::wire::ErrorBody)))]
#[delete("/api/v1/members/{id}")]
pub async fn remove(state: AppData, who: Authed, id: web::Path<String>) -> Reply {
    members::remove(&state, &who, id.into_inner()).await?;
    Ok(HttpResponse::NoContent().finish())
}
