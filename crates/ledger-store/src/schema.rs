//! Diesel's view of the tables (see `migrations/`). Shared by both backends.

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
    }
}

diesel::table! {
    account_limits (account_id) {
        account_id -> Text,
        max_hard_limit -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    sessions,
    api_keys,
    subscriptions,
    account_limits
);
