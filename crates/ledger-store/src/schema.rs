//! Diesel's view of every table (see `migrations/`). Shared by both backends.

diesel::table! {
    accounts (id) {
        id -> Text,
        email -> Nullable<Text>,
        password_hash -> Nullable<Text>,
        created_at -> BigInt,
        balance -> BigInt,
        overdraft -> BigInt,
        overdraft_limit -> BigInt,
        last_seq -> BigInt,
        compacted_balance -> BigInt,
        compacted_seq -> BigInt,
        plan_name -> Nullable<Text>,
        version -> BigInt,
        available -> BigInt,
        held -> BigInt,
        balance_at -> BigInt,
        balance_until -> BigInt,
    }
}

diesel::table! {
    grants (id) {
        id -> Text,
        account_id -> Text,
        source -> Text,
        amount -> BigInt,
        remaining -> BigInt,
        priority -> BigInt,
        effective_at -> BigInt,
        expires_at -> Nullable<BigInt>,
        created_at -> BigInt,
    }
}

diesel::table! {
    holds (id) {
        id -> Text,
        account_id -> Text,
        amount -> BigInt,
        captured -> BigInt,
        status -> Text,
        description -> Text,
        reference_id -> Nullable<Text>,
        created_at -> BigInt,
        expires_at -> BigInt,
        settled_at -> Nullable<BigInt>,
        allocations -> Text,
    }
}

diesel::table! {
    entries (id) {
        id -> Text,
        account_id -> Text,
        seq -> BigInt,
        kind -> Text,
        amount -> BigInt,
        balance_after -> BigInt,
        description -> Text,
        reference_id -> Nullable<Text>,
        source -> Text,
        plan -> Nullable<Text>,
        created_at -> BigInt,
        hold_id -> Nullable<Text>,
        refund_of -> Nullable<Text>,
        allocations -> Text,
    }
}

diesel::table! {
    idempotency_keys (account_id, scope, key) {
        account_id -> Text,
        scope -> Text,
        key -> Text,
        fingerprint -> Text,
        outcome -> Text,
        created_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(accounts, grants, holds, entries, idempotency_keys);

diesel::table! {
    sessions (token_hash) {
        token_hash -> Text,
        account_id -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        revoked_at -> Nullable<BigInt>,
        member_id -> Nullable<Text>,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        account_id -> Text,
        name -> Text,
        prefix -> Text,
        key_hash -> Text,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
        member_id -> Nullable<Text>,
        signing_secret -> Nullable<Text>,
    }
}

diesel::table! {
    subscriptions (account_id) {
        account_id -> Text,
        id -> Text,
        plan_id -> Text,
        status -> Text,
        hard_limit -> Nullable<BigInt>,
        created_at -> BigInt,
        updated_at -> BigInt,
        plan_name -> Nullable<Text>,
        monthly_credits -> BigInt,
        price_cents -> BigInt,
        overage_cents_per_1000 -> BigInt,
        paying -> Bool,
        period_anchor -> Nullable<BigInt>,
        period_start -> Nullable<BigInt>,
        period_end -> Nullable<BigInt>,
        managed_by -> Text,
        provider_subscription_id -> Nullable<Text>,
        provider_modified_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    account_limits (account_id) {
        account_id -> Text,
        max_hard_limit -> BigInt,
        updated_at -> BigInt,
    }
}

// Members (`migrations/2026-12-02-000002_members`).

diesel::table! {
    members (id) {
        id -> Text,
        account_id -> Text,
        email -> Text,
        password_hash -> Nullable<Text>,
        role -> Text,
        created_at -> BigInt,
        removed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    member_invites (id) {
        id -> Text,
        account_id -> Text,
        email -> Text,
        role -> Text,
        token_hash -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    sessions,
    api_keys,
    subscriptions,
    account_limits,
    members,
    member_invites
);

// Payments (`migrations/2026-11-21-000003_payments`,
// `migrations/2026-12-01-000802_payment_refusals`).

diesel::table! {
    payment_secrets (name) {
        name -> Text,
        value -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    payment_checkouts (id) {
        id -> Text,
        provider -> Text,
        account_id -> Text,
        pack_id -> Text,
        credits -> BigInt,
        price_cents -> BigInt,
        url -> Text,
        status -> Text,
        order_id -> Nullable<Text>,
        created_at -> BigInt,
        paid_at -> Nullable<BigInt>,
        product_id -> Nullable<Text>,
        currency -> Nullable<Text>,
    }
}

diesel::table! {
    payment_refusals (order_id) {
        order_id -> Text,
        source -> Text,
        reason -> Text,
        checkout_id -> Nullable<Text>,
        account_id -> Nullable<Text>,
        order_json -> Text,
        first_seen_at -> BigInt,
        last_seen_at -> BigInt,
        times_seen -> BigInt,
    }
}

diesel::table! {
    webhook_deliveries (webhook_id) {
        webhook_id -> Text,
        event_type -> Text,
        body -> Text,
        received_at -> BigInt,
        attempts -> BigInt,
        processed_at -> Nullable<BigInt>,
        outcome -> Nullable<Text>,
    }
}

diesel::table! {
    payment_orders (order_id) {
        order_id -> Text,
        kind -> Text,
        account_id -> Nullable<Text>,
        pack_id -> Nullable<Text>,
        paid_cents -> Nullable<BigInt>,
        credits -> BigInt,
        credit_entry_id -> Nullable<Text>,
        paid_at -> Nullable<BigInt>,
        refunded_cents -> BigInt,
        clawed_back -> BigInt,
        owed -> BigInt,
        version -> BigInt,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    payment_refunds (refund_id) {
        refund_id -> Text,
        order_id -> Text,
        amount_cents -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    auto_topups (account_id) {
        account_id -> Text,
        enabled -> Bool,
        threshold -> BigInt,
        pack_id -> Text,
        credits -> BigInt,
        price_cents -> BigInt,
        status -> Text,
        paused_reason -> Nullable<Text>,
        updated_at -> BigInt,
    }
}

diesel::table! {
    auto_topup_charges (id) {
        id -> Text,
        account_id -> Text,
        pack_id -> Text,
        credits -> BigInt,
        price_cents -> BigInt,
        status -> Text,
        reason -> Nullable<Text>,
        created_at -> BigInt,
        settled_at -> Nullable<BigInt>,
    }
}

// Keyed screenshot requests.

diesel::table! {
    screenshot_requests (account_id, idempotency_key) {
        account_id -> Text,
        idempotency_key -> Text,
        fingerprint -> Text,
        state -> Text,
        status_code -> Nullable<BigInt>,
        content_type -> Nullable<Text>,
        object -> Nullable<Text>,
        error_body -> Nullable<Text>,
        charged -> BigInt,
        cache_status -> Nullable<Text>,
        screenshot_id -> Text,
        created_at -> BigInt,
        finished_at -> Nullable<BigInt>,
    }
}

// Plans (`migrations/2026-12-02-000001_plans`).

diesel::table! {
    plan_periods (account_id, period_start) {
        account_id -> Text,
        period_start -> BigInt,
        period_end -> BigInt,
        plan_id -> Text,
        allowance -> BigInt,
        extra_written_off -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    overage_items (id) {
        id -> Text,
        account_id -> Text,
        period_start -> BigInt,
        ordinal -> BigInt,
        blocks -> BigInt,
        credits -> BigInt,
        amount_cents -> BigInt,
        status -> Text,
        attempts -> BigInt,
        last_error -> Nullable<Text>,
        next_attempt_at -> Nullable<BigInt>,
        created_at -> BigInt,
        reported_at -> Nullable<BigInt>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(subscriptions, plan_periods, overage_items, entries);

// Notifications (`migrations/2026-12-03-000012_notifications`).

diesel::table! {
    webhook_endpoints (id) {
        id -> Text,
        account_id -> Text,
        url -> Text,
        events -> Text,
        secret -> Text,
        next_seq -> BigInt,
        created_at -> BigInt,
        deleted_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    account_alerts (account_id) {
        account_id -> Text,
        low_balance_credits -> Nullable<BigInt>,
        low_notified -> Bool,
        depleted_notified -> Bool,
        updated_at -> BigInt,
    }
}

diesel::table! {
    notification_deliveries (id) {
        id -> Text,
        endpoint_id -> Text,
        account_id -> Text,
        seq -> BigInt,
        event -> Text,
        payload -> Text,
        status -> Text,
        attempts -> BigInt,
        next_attempt_at -> BigInt,
        lease_until -> BigInt,
        last_attempt_at -> Nullable<BigInt>,
        response_status -> Nullable<BigInt>,
        last_error -> Nullable<Text>,
        created_at -> BigInt,
    }
}

diesel::joinable!(notification_deliveries -> webhook_endpoints (endpoint_id));
diesel::allow_tables_to_appear_in_same_query!(webhook_endpoints, notification_deliveries);
