//! Auto top-up: when a charge leaves an account below its threshold, buy one pack.
//!
//! The rule is [`after_charge`]; the store only records what it decides
//! ([`crate::operation::Effect::StartTopup`]) in the charge's own transaction, so a
//! top-up is started exactly once per crossing of the threshold.

use crate::amount::{Cents, Credits};
use crate::ids::{AccountId, PackId};

/// Where an account's auto top-up stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopupStatus {
    /// Nothing in flight: the next charge below the threshold starts a top-up.
    Idle,
    /// A charge is in flight; no other starts until it ends.
    Pending,
    /// A charge failed; nothing starts until the owner saves the settings again.
    Paused,
}

/// Where one auto top-up charge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChargeStatus {
    /// Recorded, not yet confirmed or refused by the provider.
    Pending,
    /// Confirmed and credited.
    Paid,
    /// Refused by the provider.
    Failed,
}

crate::spelled_enum!(TopupStatus, "auto top-up status", Idle => "idle", Pending => "pending", Paused => "paused");
crate::spelled_enum!(ChargeStatus, "auto top-up charge status", Pending => "pending", Paid => "paid", Failed => "failed");

/// An account's saved auto top-up settings and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoTopup {
    pub enabled: bool,
    /// A charge leaving the available balance below this starts a top-up.
    pub threshold: Credits,
    /// The pack a top-up buys, with its credits and price as they were when saved.
    pub pack_id: PackId,
    pub credits: Credits,
    pub price: Cents,
    pub status: TopupStatus,
}

/// A top-up to start: one pending charge of the saved pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopupStart {
    pub account_id: AccountId,
    pub pack_id: PackId,
    pub credits: Credits,
    pub price: Cents,
}

/// The auto top-up rule: a charge that leaves `available_after` below the threshold of
/// enabled, idle settings starts one top-up of the saved pack. Anything else (disabled,
/// a charge in flight, paused, still at or above the threshold) starts nothing.
pub fn after_charge(
    account_id: &AccountId,
    settings: &AutoTopup,
    available_after: Credits,
) -> Option<TopupStart> {
    let starts = settings.enabled
        && settings.status == TopupStatus::Idle
        && available_after < settings.threshold;
    starts.then(|| TopupStart {
        account_id: account_id.clone(),
        pack_id: settings.pack_id.clone(),
        credits: settings.credits,
        price: settings.price,
    })
}

/// The status saved settings take: a charge still in flight stays in flight (`Pending`),
/// otherwise saving clears a pause (`Idle`).
pub fn status_on_save(charge_in_flight: bool) -> TopupStatus {
    if charge_in_flight {
        TopupStatus::Pending
    } else {
        TopupStatus::Idle
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(status: TopupStatus, enabled: bool) -> AutoTopup {
        AutoTopup {
            enabled,
            threshold: Credits::whole(100),
            pack_id: PackId::new("pack_small"),
            credits: Credits::whole(1000),
            price: Cents::new(900),
            status,
        }
    }

    #[test]
    fn a_charge_below_the_threshold_of_idle_settings_starts_one_top_up() {
        let acct = AccountId::new("acct_1");
        let start = after_charge(
            &acct,
            &settings(TopupStatus::Idle, true),
            Credits::whole(99),
        );
        assert_eq!(
            start,
            Some(TopupStart {
                account_id: acct,
                pack_id: PackId::new("pack_small"),
                credits: Credits::whole(1000),
                price: Cents::new(900),
            })
        );
    }

    #[test]
    fn nothing_starts_at_the_threshold_or_when_disabled_pending_or_paused() {
        let acct = AccountId::new("acct_1");
        let low = Credits::whole(5);
        let idle = settings(TopupStatus::Idle, true);
        assert_eq!(after_charge(&acct, &idle, Credits::whole(100)), None);
        assert_eq!(
            after_charge(&acct, &settings(TopupStatus::Idle, false), low),
            None
        );
        assert_eq!(
            after_charge(&acct, &settings(TopupStatus::Pending, true), low),
            None
        );
        assert_eq!(
            after_charge(&acct, &settings(TopupStatus::Paused, true), low),
            None
        );
        // An overdrawn account is below any threshold.
        assert!(after_charge(&acct, &idle, Credits::whole(-3)).is_some());
    }

    #[test]
    fn statuses_round_trip_through_their_stored_spelling() {
        for s in [TopupStatus::Idle, TopupStatus::Pending, TopupStatus::Paused] {
            assert_eq!(s.as_str().parse::<TopupStatus>(), Ok(s));
        }
        for s in [
            ChargeStatus::Pending,
            ChargeStatus::Paid,
            ChargeStatus::Failed,
        ] {
            assert_eq!(s.as_str().parse::<ChargeStatus>(), Ok(s));
        }
        assert!("done".parse::<ChargeStatus>().is_err());
        assert_eq!(status_on_save(true), TopupStatus::Pending);
        assert_eq!(status_on_save(false), TopupStatus::Idle);
    }
}
