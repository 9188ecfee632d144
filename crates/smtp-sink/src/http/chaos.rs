//! Scripted failures per recipient over HTTP (semantics in [`crate::chaos`]).
//!
//! - `PUT /api/v1/chaos/recipients/{email}` with
//!   `{"responses": [{"action": "reply", "stage": "rcpt", "code": 451, "text": "..."},
//!   {"action": "disconnect", "stage": "data"}, {"action": "accept"}]}` replaces the rule
//!   for `email` and answers it (200).
//!   `action` is `accept`, `reply` (needs `code` 400–599; `text` optional) or
//!   `disconnect`; `stage` is `rcpt` (default) or `data`.
//! - `GET /api/v1/chaos/recipients` → `{"recipients": [rule, ...]}`, by address.
//! - `GET /api/v1/chaos/recipients/{email}` → one rule, or 404.
//! - `DELETE /api/v1/chaos/recipients[/{email}]` → 204, all rules or one.
//!
//! A rule reads `{"email", "responses", "consumed", "attempts"}`: `responses[..consumed]`
//! have been used; `attempts` counts every `RCPT TO` for the address since the rule was
//! set, including those accepted once the responses ran out.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State as Extract};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Problem, State};
use crate::chaos::{self, ChaosError, ChaosResponse, ChaosRule, Stage};

pub(super) fn router() -> Router<State> {
    Router::new()
        .route("/api/v1/chaos/recipients", get(list).delete(clear))
        .route(
            "/api/v1/chaos/recipients/{email}",
            get(show).put(replace).delete(remove),
        )
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseJson {
    action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

impl From<&ChaosResponse> for ResponseJson {
    fn from(response: &ChaosResponse) -> Self {
        match response {
            ChaosResponse::Accept => ResponseJson {
                action: "accept".to_string(),
                stage: None,
                code: None,
                text: None,
            },
            ChaosResponse::Reply { stage, code, text } => ResponseJson {
                action: "reply".to_string(),
                stage: Some(stage.as_str().to_string()),
                code: Some(*code),
                text: Some(text.clone()),
            },
            ChaosResponse::Disconnect { stage } => ResponseJson {
                action: "disconnect".to_string(),
                stage: Some(stage.as_str().to_string()),
                code: None,
                text: None,
            },
        }
    }
}

#[derive(Serialize)]
struct RuleJson {
    email: String,
    responses: Vec<ResponseJson>,
    consumed: usize,
    attempts: usize,
}

impl From<ChaosRule> for RuleJson {
    fn from(rule: ChaosRule) -> Self {
        RuleJson {
            responses: rule.responses.iter().map(ResponseJson::from).collect(),
            email: rule.email,
            consumed: rule.consumed,
            attempts: rule.attempts,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    responses: Vec<Value>,
}

type FieldErrors = BTreeMap<String, Vec<String>>;

/// One response of the body, or what is wrong with it (under `responses[i].field`).
fn response_from(index: usize, value: Value, errors: &mut FieldErrors) -> Option<ChaosResponse> {
    let mut fail = |field: &str, message: String| {
        let key = if field.is_empty() {
            format!("responses[{index}]")
        } else {
            format!("responses[{index}].{field}")
        };
        errors.entry(key).or_default().push(message);
    };
    let json: ResponseJson = match serde_json::from_value(value) {
        Ok(json) => json,
        Err(error) => {
            fail("", error.to_string());
            return None;
        }
    };
    let stage = match json.stage.as_deref() {
        None | Some("rcpt") => Some(Stage::Rcpt),
        Some("data") => Some(Stage::Data),
        Some(other) => {
            fail(
                "stage",
                format!("must be \"rcpt\" or \"data\", got {other:?}"),
            );
            None
        }
    };
    let response = match (json.action.as_str(), json.code) {
        ("accept", None) => ChaosResponse::Accept,
        ("reply", Some(code)) => ChaosResponse::Reply {
            stage: stage?,
            code,
            text: json
                .text
                .filter(|text| !text.trim().is_empty())
                .unwrap_or_else(|| chaos::default_text(code)),
        },
        ("reply", None) => {
            fail("code", "is required for a reply".to_string());
            return None;
        }
        ("disconnect", None) => ChaosResponse::Disconnect { stage: stage? },
        ("accept" | "disconnect", Some(_)) => {
            fail("code", "is only allowed for a reply".to_string());
            return None;
        }
        (other, _) => {
            fail(
                "action",
                format!("must be \"accept\", \"reply\" or \"disconnect\", got {other:?}"),
            );
            return None;
        }
    };
    if let Some((field, reason)) = response.problem() {
        fail(field, reason);
        return None;
    }
    Some(response)
}

/// `PUT /api/v1/chaos/recipients/{email}`.
async fn replace(
    Extract(state): Extract<State>,
    Path(email): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let body: RuleBody = serde_json::from_slice(&body).map_err(|error| {
        if error.is_syntax() || error.is_eof() {
            Problem::bad_request(format!("invalid JSON body: {error}"))
        } else {
            let mut errors = FieldErrors::new();
            errors.entry("body".to_string()).or_default().push(format!(
                "{error}; expected {{\"responses\": [{{\"action\": \"reply\", \"code\": 451}}, ...]}}"
            ));
            Problem::validation(errors)
        }
    })?;
    if body.responses.len() > chaos::MAX_RESPONSES {
        let mut errors = FieldErrors::new();
        errors
            .entry("responses".to_string())
            .or_default()
            .push(format!("at most {} responses", chaos::MAX_RESPONSES));
        return Err(Problem::validation(errors));
    }
    let mut errors = FieldErrors::new();
    let responses: Vec<ChaosResponse> = body
        .responses
        .into_iter()
        .enumerate()
        .filter_map(|(index, value)| response_from(index, value, &mut errors))
        .collect();
    if !errors.is_empty() {
        return Err(Problem::validation(errors));
    }
    match state.chaos.set(&email, responses) {
        Ok(rule) => Ok(axum::Json(RuleJson::from(rule)).into_response()),
        Err(error @ ChaosError::TooManyRules) => Err(Problem::new(
            StatusCode::CONFLICT,
            "too_many_rules",
            error.to_string(),
        )),
        Err(error) => {
            let field = match error {
                ChaosError::InvalidEmail => "email",
                _ => "responses",
            };
            let mut errors = FieldErrors::new();
            errors
                .entry(field.to_string())
                .or_default()
                .push(error.to_string());
            Err(Problem::validation(errors))
        }
    }
}

#[derive(Serialize)]
struct RulesJson {
    recipients: Vec<RuleJson>,
}

async fn list(Extract(state): Extract<State>) -> Response {
    let recipients = state.chaos.list().into_iter().map(RuleJson::from).collect();
    axum::Json(RulesJson { recipients }).into_response()
}

async fn show(
    Extract(state): Extract<State>,
    Path(email): Path<String>,
) -> Result<Response, Problem> {
    state
        .chaos
        .get(&email)
        .map(|rule| axum::Json(RuleJson::from(rule)).into_response())
        .ok_or_else(|| Problem::not_found(format!("no chaos rule for {email:?}")))
}

async fn remove(Extract(state): Extract<State>, Path(email): Path<String>) -> StatusCode {
    state.chaos.remove(&email);
    StatusCode::NO_CONTENT
}

async fn clear(Extract(state): Extract<State>) -> StatusCode {
    state.chaos.clear();
    StatusCode::NO_CONTENT
}
