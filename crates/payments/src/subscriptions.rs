//! Provider-managed subscriptions and overage reporting: the narrow interface the store
//! implements ([`SubscriptionBook`]), the plain data it exchanges, and how Polar's
//! subscription payloads map onto it.
//!
//! The book owns every rule about what is stored: it skips an update whose `modified_at`
//! is not newer than the one it holds (so duplicates and any delivery order leave the
//! newest state), and it only hands out overage items that are still pending and due.

use ledger_core::{AccountId, SubscriptionStatus, Timestamp};
use ledger_store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::polar::Customer;

/// Metadata key naming the plan on subscription checkouts (next to `account_id`).
pub const META_PLAN: &str = "plan_id";

/// The overage event name used when none is configured (`polar.overage_event_name`).
pub const DEFAULT_OVERAGE_EVENT: &str = "shotledger_overage";

/// A subscription as the provider now says it is, for one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionUpdate {
    /// Polar's subscription id (`data.id`).
    pub provider_subscription_id: String,
    pub account_id: AccountId,
    /// One of the configured plans.
    pub plan_id: String,
    pub status: SubscriptionStatus,
    pub current_period_start: Timestamp,
    /// `None`: the provider names no end (a subscription that is not renewing).
    pub current_period_end: Option<Timestamp>,
    /// When the provider last changed it, in **microseconds** since the Unix epoch
    /// (Polar's precision: a subscription created and activated in the same millisecond
    /// still orders). Falls back to `created_at` when Polar sends `modified_at: null`.
    pub modified_at_micros: i64,
    /// The customer cancelled; the subscription stays in force until the period ends.
    pub cancel_at_period_end: bool,
}

/// What [`SubscriptionBook::apply_subscription_update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Stored: it was newer than what the book held (or the first one).
    Changed,
    /// Skipped: the book holds an update at least as new (`modified_at`).
    NotNewer,
    /// No such account: nothing stored (the event is recorded as not applicable).
    UnknownAccount,
    /// The book has no configured plan of that id: nothing stored (not applicable).
    UnknownPlan,
}

/// One billed overage item due for reporting to the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverageReport {
    /// The item's id (`plan::overage_item_id`): the same on every retry, and the
    /// `external_id` Polar deduplicates on.
    pub id: String,
    pub account_id: AccountId,
    pub period_start: Timestamp,
    /// Blocks of 1,000 billed (negative: credited back after a refund of usage).
    pub blocks: i64,
    /// Whole credits billed: `blocks` × 1,000 (what the meter sums).
    pub credits: i64,
    pub amount_cents: i64,
    /// Reports tried so far (for the backoff).
    pub attempts: u32,
}

/// How reporting an item went, for [`SubscriptionBook::record_overage_report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportOutcome {
    /// The provider acknowledged it (2xx): never send it again.
    Reported,
    /// No provider bills it (demo, none): kept as recorded, never sent.
    Recorded,
    /// Sending failed: keep it pending, try again at `next_attempt_at`.
    Failed {
        error: String,
        next_attempt_at: Timestamp,
    },
}

/// The store's side of provider-managed subscriptions and overage items. The lead
/// implements it over `ledger-store`; tests may use an in-memory one.
pub trait SubscriptionBook: Send + Sync {
    /// Applies a provider update to the account's subscription, unless the stored one
    /// has a `modified_at` at least as new ([`UpdateOutcome::NotNewer`]).
    fn apply_subscription_update(
        &self,
        update: &SubscriptionUpdate,
        now: Timestamp,
    ) -> Result<UpdateOutcome, StoreError>;

    /// Up to `limit` overage items still pending whose next attempt is due at `now`,
    /// oldest first. Items reported or recorded are never returned again.
    fn pending_overage_reports(
        &self,
        now: Timestamp,
        limit: usize,
    ) -> Result<Vec<OverageReport>, StoreError>;

    /// Records how reporting item `id` went (a failure also counts an attempt).
    fn record_overage_report(
        &self,
        id: &str,
        outcome: &ReportOutcome,
        now: Timestamp,
    ) -> Result<(), StoreError>;
}

/// A plan as the payments side sees it: what it costs and which Polar product sells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOffer {
    pub id: String,
    pub name: String,
    pub price_cents: i64,
    pub paying: bool,
    /// `plans[].polar_product_id`: the Polar product of a paying plan.
    pub product_id: Option<String>,
}

/// What [`crate::Payments::with_subscriptions`] needs beyond [`crate::PaymentsConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionConfig {
    pub plans: Vec<PlanOffer>,
    /// `polar.overage_event_name`: the name of the ingested overage events (the meter
    /// filters on it).
    pub overage_event_name: String,
}

impl SubscriptionConfig {
    pub fn plan(&self, id: &str) -> Option<&PlanOffer> {
        self.plans.iter().find(|p| p.id == id)
    }

    pub fn plan_for_product(&self, product_id: &str) -> Option<&PlanOffer> {
        self.plans
            .iter()
            .find(|p| p.product_id.as_deref() == Some(product_id))
    }
}

/// The summary of one [`crate::Payments::report_overage`] run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportSummary {
    /// Acknowledged by Polar now.
    pub reported: u64,
    /// Recorded without a call (demo or no provider).
    pub recorded: u64,
    /// Failed now; retried after their backoff.
    pub failed: u64,
}

/// What the provider answers to a subscription change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeRequested {
    /// Polar took the change; its subscription webhooks bring the new state.
    Provider { subscription_id: String },
    /// No provider holds the subscription (demo): the caller applies the change itself.
    Local,
}

/// A Polar subscription (the fields we read; the rest is ignored).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Subscription {
    pub id: String,
    #[serde(default)]
    pub status: String,
    pub current_period_start: Option<String>,
    pub current_period_end: Option<String>,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    pub created_at: Option<String>,
    pub modified_at: Option<String>,
    pub product_id: Option<String>,
    pub customer: Option<Customer>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl Subscription {
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }
}

/// Our status for a Polar status: active/trialing → active; past_due/unpaid → past
/// due; canceled → cancelled; incomplete/incomplete_expired → inactive. A `canceled`
/// *event* whose subscription is still `active` with `cancel_at_period_end` stays active
/// until the period ends (the status decides, not the event). `revoked` always cancels.
pub fn map_status(event_type: &str, polar_status: &str) -> Option<SubscriptionStatus> {
    if event_type == "subscription.revoked" {
        return Some(SubscriptionStatus::Cancelled);
    }
    Some(match polar_status {
        "active" | "trialing" => SubscriptionStatus::Active,
        "past_due" | "unpaid" => SubscriptionStatus::PastDue,
        "canceled" => SubscriptionStatus::Cancelled,
        "incomplete" | "incomplete_expired" => SubscriptionStatus::Inactive,
        _ => return None,
    })
}

/// Microseconds since the Unix epoch of an RFC 3339 instant.
pub fn parse_micros(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|dt| dt.timestamp_micros())
}

/// The subscription webhook events we apply.
pub const SUBSCRIPTION_EVENTS: [&str; 7] = [
    "subscription.created",
    "subscription.active",
    "subscription.updated",
    "subscription.canceled",
    "subscription.uncanceled",
    "subscription.revoked",
    "subscription.past_due",
];

/// Why a subscription event does not apply (recorded as the delivery's outcome; never
/// retried).
pub(crate) fn not_applicable(reason: impl std::fmt::Display) -> String {
    format!("not applicable: {reason}")
}

/// Turns a Polar subscription into an update for the book, or says why it does not
/// apply to us. The plan is the product's (`plans[].polar_product_id`); only a
/// subscription with no product (the demo provider's) is read from the metadata.
pub fn to_update(
    event_type: &str,
    sub: &Subscription,
    config: &SubscriptionConfig,
) -> Result<SubscriptionUpdate, String> {
    let account = sub
        .metadata_str(crate::polar::META_ACCOUNT)
        .or_else(|| {
            sub.customer
                .as_ref()
                .and_then(|c| c.external_id.as_deref())
                .filter(|s| !s.is_empty())
        })
        .ok_or_else(|| not_applicable("it names no account of ours"))?;
    let plan = match sub.product_id.as_deref().filter(|p| !p.is_empty()) {
        Some(product) => config
            .plan_for_product(product)
            .ok_or_else(|| not_applicable(format!("product {product} is no plan's")))?,
        None => {
            let named = sub
                .metadata_str(META_PLAN)
                .ok_or_else(|| not_applicable("it names no product and no plan"))?;
            config
                .plan(named)
                .ok_or_else(|| not_applicable(format!("plan {named} is not configured")))?
        }
    };
    let status = map_status(event_type, &sub.status)
        .ok_or_else(|| not_applicable(format!("unknown status {}", sub.status)))?;
    let stamp = |s: &Option<String>| s.as_deref().and_then(Timestamp::parse_rfc3339);
    let modified = sub
        .modified_at
        .as_deref()
        .or(sub.created_at.as_deref())
        .and_then(parse_micros)
        .ok_or_else(|| not_applicable("it has neither modified_at nor created_at"))?;
    let start = stamp(&sub.current_period_start)
        .ok_or_else(|| not_applicable("it has no current_period_start"))?;
    Ok(SubscriptionUpdate {
        provider_subscription_id: sub.id.clone(),
        account_id: AccountId::new(account.to_owned()),
        plan_id: plan.id.clone(),
        status,
        current_period_start: start,
        current_period_end: stamp(&sub.current_period_end),
        modified_at_micros: modified,
        cancel_at_period_end: sub.cancel_at_period_end,
    })
}

/// The wait before retrying a failed overage report: 30 s doubled per attempt, at most
/// an hour.
pub fn report_backoff_secs(attempts: u32) -> i64 {
    30i64.saturating_mul(1i64 << attempts.min(20)).min(3_600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SubscriptionConfig {
        SubscriptionConfig {
            plans: vec![
                PlanOffer {
                    id: "free".into(),
                    name: "Free".into(),
                    price_cents: 0,
                    paying: false,
                    product_id: None,
                },
                PlanOffer {
                    id: "basic".into(),
                    name: "Basic".into(),
                    price_cents: 2900,
                    paying: true,
                    product_id: Some("prod_basic".into()),
                },
            ],
            overage_event_name: DEFAULT_OVERAGE_EVENT.into(),
        }
    }

    #[test]
    fn statuses_map_as_the_contract_says() {
        use SubscriptionStatus::*;
        for (event, status, want) in [
            ("subscription.active", "active", Some(Active)),
            ("subscription.created", "trialing", Some(Active)),
            ("subscription.updated", "past_due", Some(PastDue)),
            ("subscription.updated", "unpaid", Some(PastDue)),
            ("subscription.canceled", "active", Some(Active)),
            ("subscription.canceled", "canceled", Some(Cancelled)),
            ("subscription.revoked", "active", Some(Cancelled)),
            ("subscription.created", "incomplete", Some(Inactive)),
            ("subscription.updated", "incomplete_expired", Some(Inactive)),
            ("subscription.updated", "paused_forever", None),
        ] {
            assert_eq!(map_status(event, status), want, "{event} {status}");
        }
    }

    fn sub(product: Option<&str>, metadata: Value) -> Subscription {
        serde_json::from_value(serde_json::json!({
            "id": "sub_1", "status": "active",
            "current_period_start": "2026-12-01T00:00:00.000001Z",
            "current_period_end": "2027-01-01T00:00:00Z",
            "cancel_at_period_end": false,
            "created_at": "2026-12-01T00:00:00.000001Z", "modified_at": null,
            "product_id": product, "metadata": metadata,
            "customer": {"id": "cus_1", "external_id": "acct_from_customer"},
        }))
        .unwrap()
    }

    #[test]
    fn the_plan_comes_from_the_product_and_only_without_one_from_metadata() {
        let c = config();
        let u = to_update(
            "subscription.active",
            &sub(Some("prod_basic"), serde_json::json!({"plan_id": "free"})),
            &c,
        )
        .unwrap();
        assert_eq!(u.plan_id, "basic");
        assert_eq!(u.account_id.as_str(), "acct_from_customer");
        assert_eq!(u.modified_at_micros, 1_796_083_200_000_001);
        let u = to_update(
            "subscription.active",
            &sub(
                None,
                serde_json::json!({"plan_id": "basic", "account_id": "acct_meta"}),
            ),
            &c,
        )
        .unwrap();
        assert_eq!(
            (u.plan_id.as_str(), u.account_id.as_str()),
            ("basic", "acct_meta")
        );
        let e = to_update(
            "subscription.active",
            &sub(Some("prod_other"), serde_json::json!({})),
            &c,
        );
        assert!(e.unwrap_err().starts_with("not applicable"));
        let e = to_update("subscription.active", &sub(None, serde_json::json!({})), &c);
        assert!(e.unwrap_err().starts_with("not applicable"));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(report_backoff_secs(0), 30);
        assert_eq!(report_backoff_secs(1), 60);
        assert_eq!(report_backoff_secs(3), 240);
        assert_eq!(report_backoff_secs(40), 3_600);
    }
}
