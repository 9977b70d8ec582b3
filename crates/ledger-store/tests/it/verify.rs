//! `verify` reads in pages (issue 11): what is wrong past the first page of accounts,
//! entries, holds or grants is found as surely as on the first, and the checks that span
//! pages (the running balance, a hold's entries, an entry's refunds) hold across them.

use crate::common;

use common::*;
use ledger_core::*;
use ledger_store::{Applied, BatchItem, Operation, Spend, Store};

on_both_backends!(corrupt_rows_past_the_first_page_are_found,);

/// More than a page (1,000 rows) of everything: 1,000 filler accounts sorting first,
/// then one account with 1,001 grants, 1,100 captured holds and 2,103 entries.
const HOLDS: usize = 1_100;
const CREDITS: usize = 1_001;

/// Applies `ops` to `a` in one transaction; their outcomes, in order.
fn batch(s: &Store, a: &AccountId, ops: Vec<Operation>, now: Timestamp) -> Vec<Applied> {
    let items = ops
        .into_iter()
        .map(|operation| BatchItem {
            account_id: a.clone(),
            idempotency: None,
            operation,
        })
        .collect();
    s.ledger()
        .apply_batch(items, now)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

fn corrupt_rows_past_the_first_page_are_found(db: TestDb) {
    let s = &db.store;
    s.execute_batch(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
         INSERT INTO accounts (id, created_at) SELECT '0-filler-' || i, 0 FROM n;",
    )
    .unwrap();
    let a = account(s, 0);
    let credits = (0..CREDITS)
        .map(|_| Operation::Credit {
            spec: GrantSpec::new(GrantSource::Purchase, c(2)),
            memo: Memo::new("Purchased"),
        })
        .collect();
    let credited: Vec<Entry> = batch(s, &a, credits, at(1))
        .into_iter()
        .map(entry)
        .collect();
    let reserves = (0..HOLDS)
        .map(|_| Operation::Reserve {
            amount: c(1),
            ttl_ms: 600_000,
            spend: Spend::Strict,
            memo: Memo::new("Render"),
        })
        .collect();
    let holds: Vec<Hold> = batch(s, &a, reserves, at(2))
        .into_iter()
        .map(hold)
        .collect();
    let captures = holds
        .iter()
        .map(|h| Operation::Capture {
            hold_id: h.id.clone(),
            amount: None,
            memo: None,
        })
        .collect();
    let usage: Vec<Entry> = batch(s, &a, captures, at(3))
        .into_iter()
        .map(entry)
        .collect();
    let refunded = &usage[HOLDS - 50];
    let refund = Operation::Refund {
        entry_id: refunded.id.clone(),
        amount: None,
        memo: Memo::new("Refund"),
    };
    batch(s, &a, vec![refund], at(4));
    let report = s.maintenance().verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.accounts, 1_001);
    assert_eq!(report.entries, (CREDITS + HOLDS + 1) as u64);
    assert_eq!(usage.last().unwrap().seq, (CREDITS + HOLDS) as i64);

    // The last entry of the first page says the wrong balance: it is named, and so is
    // the first of the second page, judged against what the last of the first says.
    let last_of_first = &credited[999];
    let first_of_second = &credited[1_000];
    assert_eq!((last_of_first.seq, first_of_second.seq), (1_000, 1_001));
    // That credit past the first page also turns into a second refund of `refunded`.
    let second_refund = first_of_second;
    // The last two holds by id are on the second page of holds.
    let mut by_id: Vec<&HoldId> = holds.iter().map(|h| &h.id).collect();
    by_id.sort();
    let (charged_twice, last_hold) = (by_id[HOLDS - 2], by_id[HOLDS - 1]);
    // Two usage entries on the last page of entries, of other holds: one will name
    // `charged_twice` too, one will not decode.
    let mut others = usage[HOLDS - 40..].iter().filter(|e| {
        e.hold_id
            .as_ref()
            .is_some_and(|h| h != charged_twice && h != last_hold)
    });
    let (other_usage, unreadable) = (others.next().unwrap(), others.next().unwrap());
    let last_grant = credited
        .iter()
        .flat_map(|e| &e.allocations)
        .filter_map(|a| match &a.lot {
            Lot::Grant(g) => Some(g),
            Lot::Overdraft => None,
        })
        .max()
        .unwrap();
    let too_much = Credits::MAX_AMOUNT + Credits::from_millis(1);
    let too_much = too_much.millis();
    s.execute_batch(&format!(
        "UPDATE entries SET balance_after = balance_after + 7 WHERE id = '{}';
         UPDATE entries SET kind = 'refund', refund_of = '{}' WHERE id = '{}';
         UPDATE holds SET captured = 0 WHERE id = '{last_hold}';
         UPDATE entries SET hold_id = '{charged_twice}' WHERE id = '{}';
         UPDATE grants SET amount = {too_much} WHERE id = '{last_grant}';
         UPDATE entries SET allocations = 'not json' WHERE id = '{}';
         UPDATE accounts SET balance = balance + 1 WHERE id = '{a}';",
        last_of_first.id, refunded.id, second_refund.id, other_usage.id, unreadable.id,
    ))
    .unwrap();
    let report = s.maintenance().verify().unwrap();
    assert!(!report.ok);
    assert!(
        report.violations.iter().all(|v| v.account_id == a.as_str()),
        "{report:?}"
    );
    let found: Vec<&str> = report
        .violations
        .iter()
        .map(|v| v.message.as_str())
        .collect();
    let said = |text: String| {
        assert!(
            found.iter().any(|m| m.contains(&text)),
            "{text:?} in {found:#?}"
        );
    };
    let off = last_of_first.balance_after + Credits::from_millis(7);
    said(format!(
        "entry {} says balance {off} but the entries add up to {}",
        last_of_first.id, last_of_first.balance_after
    ));
    said(format!(
        "entry {} says balance {} but the entries add up to {}",
        first_of_second.id,
        first_of_second.balance_after,
        off + first_of_second.amount
    ));
    said(format!(
        "refunds of {} add up to 3, more than its charge 1",
        refunded.id
    ));
    said(format!("hold {last_hold} captured 0 but its entry says -1"));
    said(format!("hold {charged_twice} was charged 2 times"));
    said(format!(
        "grant {last_grant} of {} is past the maximum amount {}",
        Credits::from_millis(too_much),
        Credits::MAX_AMOUNT
    ));
    said("differs from lots".into());
    said(format!("entry {} cannot be read", unreadable.id));
    said("differs from the sum of its entries".into());
    // The hold whose entry now names another is charged by none: not a violation.
    let released = other_usage.hold_id.as_ref().unwrap();
    assert!(
        !found.iter().any(|m| m.contains(released.as_str())),
        "{found:#?}"
    );
}
