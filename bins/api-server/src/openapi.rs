//! The OpenAPI document, generated from the handlers' annotations so it cannot drift.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::routes::{account, auto_topup, screenshot};
use crate::wire;

#[derive(OpenApi)]
#[openapi(
    info(title = "Shotledger", description = "A screenshot API paid with prepaid credits, and its credit ledger."),
    components(schemas(
        auto_topup::AutoTopupBody, account::CsrfTokenView, screenshot::ScreenshotOptions, wire::ErrorBody, wire::BalanceView, wire::PackView, wire::TransactionView, wire::UsageView,
        wire::Credentials, wire::AccountView, wire::NewKey, wire::KeyCreated, wire::KeyView, wire::CreditsV1,
        wire::PurchaseRequest, wire::CheckoutView, wire::AdminNewAccount, wire::AdjustmentRequest,
        wire::DebitRequest, wire::HoldRequest, wire::CaptureRequest, wire::HoldView, wire::RefundRequest,
        wire::SubscriptionRequest, wire::SubscriptionView, wire::MaxHardLimitRequest, wire::MaxHardLimitView,
    )),
    modifiers(&Registered, &Security),
)]
pub struct ApiDoc;

/// The paths: every registered route (`routes::configure`'s own list), so a route cannot be
/// served undocumented or documented unserved.
struct Registered;

impl Modify for Registered {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.paths = crate::routes::documented();
    }
}

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
