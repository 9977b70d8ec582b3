//! The limits in `/openapi.json`: every operation a limit applies to documents `429` (with
//! `Retry-After`) and the `x-ratelimit-*` headers of its answers.

use serde_json::{json, Value};
use utoipa::Modify;

/// Adds the limits' answer and headers to each operation (see the module documentation).
pub struct Documented;

fn header(description: &str) -> Value {
    json!({"description": description, "schema": {"type": "integer", "minimum": 0}})
}

impl Modify for Documented {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let Ok(mut value) = serde_json::to_value(&*doc) else {
            return;
        };
        let meter = json!({
            "x-ratelimit-limit": header("The burst of the limit this request was counted against (its API key or session; its address when unauthenticated); absent when that limit is off"),
            "x-ratelimit-remaining": header("Requests that may still be made at once"),
            "x-ratelimit-reset": header("Seconds until the limit's bucket is full again"),
        });
        let mut refused_headers = meter.clone();
        refused_headers["Retry-After"] = header("Seconds to wait before retrying (rounded up)");
        let refused = json!({
            "description": "Too many requests: RATE_LIMITED (the API key's or the address's rate, \
                see x-ratelimit-*) or CONCURRENCY_LIMITED (the account's captures at once); \
                retry after Retry-After seconds",
            "headers": refused_headers,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        });
        let Some(paths) = value["paths"].as_object_mut() else {
            return;
        };
        for (path, item) in paths.iter_mut() {
            if super::EXEMPT.contains(&path.as_str()) {
                continue;
            }
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                    continue;
                };
                match responses.get_mut("429") {
                    Some(answer) => {
                        let headers = &mut answer["headers"];
                        if !headers.is_object() {
                            *headers = json!({});
                        }
                        for (name, h) in refused_headers.as_object().into_iter().flatten() {
                            headers[name] = h.clone();
                        }
                    }
                    None => {
                        responses.insert("429".into(), refused.clone());
                    }
                }
                for (status, answer) in responses.iter_mut() {
                    // 431 is the HTTP layer's own answer, before any limit.
                    if status == "431" || status == "429" {
                        continue;
                    }
                    let headers = &mut answer["headers"];
                    if !headers.is_object() {
                        *headers = json!({});
                    }
                    for (name, h) in meter.as_object().into_iter().flatten() {
                        headers[name] = h.clone();
                    }
                }
            }
        }
        if let Ok(edited) = serde_json::from_value(value) {
            *doc = edited;
        }
    }
}
