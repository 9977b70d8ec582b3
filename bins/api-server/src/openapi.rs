//! The OpenAPI document, generated from the handlers' annotations so it cannot drift.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{account, admin, api_keys, auth, auto_topup, credits, screenshot, system};
use crate::wire;

#[derive(OpenApi)]
#[openapi(
    info(title = "Shotledger", description = "A screenshot API paid with prepaid credits, and its credit ledger."),
    paths(
        system::healthz, system::openapi,
        auth::signup, auth::login, auth::logout,
        api_keys::create, api_keys::list, api_keys::delete,
        credits::balance, credits::packs, credits::purchase, credits::transactions, credits::usage,
        account::account_credits, account::v1_credits, auto_topup::get, auto_topup::put,
        screenshot::take_get, screenshot::take_post, screenshot::quote_get,
        admin::create_account, admin::adjust, admin::debit, admin::hold, admin::capture, admin::release,
        admin::refund, admin::subscription, admin::max_hard_limit, admin::verify,
    ),
    components(schemas(
        auto_topup::AutoTopupBody, wire::ErrorBody, wire::BalanceView, wire::PackView, wire::TransactionView, wire::UsageView,
        wire::Credentials, wire::AccountView, wire::NewKey, wire::KeyCreated, wire::KeyView, wire::CreditsV1,
        wire::PurchaseRequest, wire::CheckoutView, wire::AdminNewAccount, wire::AdjustmentRequest,
        wire::DebitRequest, wire::HoldRequest, wire::CaptureRequest, wire::HoldView, wire::RefundRequest,
        wire::SubscriptionRequest, wire::SubscriptionView, wire::MaxHardLimitRequest, wire::MaxHardLimitView,
    )),
    modifiers(&Security),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}
