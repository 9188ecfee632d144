//! Scripted failures for chosen recipients.
//!
//! A rule maps one recipient address (compared case-insensitively) to a list of
//! [`ChaosResponse`]s. Every `RCPT TO` naming that address takes the next response of its
//! list, in order; once the list is used up the address is accepted as usual. A response
//! acts either at the `RCPT TO` itself ([`Stage::Rcpt`]: only that recipient is refused or
//! the connection dropped, other recipients of the transaction are unaffected) or at the
//! end of `DATA` ([`Stage::Data`]: the recipient is accepted, then the whole message is
//! refused or the connection dropped after its final `.`, because SMTP answers the end of
//! `DATA` once for all recipients). A message refused or cut off at either stage is not
//! stored. If several recipients of one transaction carry a `data`-stage response, the one
//! named first in `RCPT TO` order decides.
//!
//! A response is consumed when its `RCPT TO` arrives, even if the client then abandons the
//! transaction.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Most rules kept at once; more are refused rather than growing without bound.
pub const MAX_RULES: usize = 10_000;
/// Most responses in one rule.
pub const MAX_RESPONSES: usize = 1_000;
/// Longest reply text.
pub const MAX_TEXT: usize = 400;

/// Where in the SMTP conversation a scripted response takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Answer the `RCPT TO` naming the recipient.
    Rcpt,
    /// Accept the recipient, then answer the end of `DATA` (affects the whole message).
    Data,
}

impl Stage {
    /// The name used in the HTTP API (`rcpt`, `data`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
        }
    }
}

/// What one delivery to a chosen recipient gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChaosResponse {
    /// Accept as usual.
    Accept,
    /// Reply `code text` (code 400–599) at `stage`.
    Reply {
        stage: Stage,
        code: u16,
        text: String,
    },
    /// Close the connection without replying at `stage` (for `data`: after reading the
    /// whole message).
    Disconnect { stage: Stage },
}

impl ChaosResponse {
    /// A reply with the default text for its class (`4.3.0 ...` or `5.0.0 ...`).
    pub fn reply(stage: Stage, code: u16) -> ChaosResponse {
        ChaosResponse::Reply {
            stage,
            code,
            text: default_text(code),
        }
    }

    /// Why this response cannot be sent, if it cannot.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        match self {
            ChaosResponse::Reply { code, text, .. } => {
                if !(400..=599).contains(code) {
                    Some((
                        "code",
                        format!("must be a failure code from 400 to 599, got {code}"),
                    ))
                } else if text.len() > MAX_TEXT {
                    Some(("text", format!("must be at most {MAX_TEXT} bytes")))
                } else if text.chars().any(char::is_control) {
                    Some((
                        "text",
                        "must be one line without control characters".to_string(),
                    ))
                } else {
                    None
                }
            }
            ChaosResponse::Accept | ChaosResponse::Disconnect { .. } => None,
        }
    }
}

/// `4.3.0 ...` / `5.0.0 ...`: an enhanced status code of the reply's class, so clients
/// that parse them see a consistent reply.
pub(crate) fn default_text(code: u16) -> String {
    if code < 500 {
        "4.3.0 Temporary failure injected by smtp-sink".to_string()
    } else {
        "5.0.0 Permanent failure injected by smtp-sink".to_string()
    }
}

/// A rule as seen from outside: its responses and how far it has got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChaosRule {
    /// The recipient address, lower-cased.
    pub email: String,
    /// All scripted responses, in order.
    pub responses: Vec<ChaosResponse>,
    /// How many of `responses` have been used (`responses[..consumed]`).
    pub consumed: usize,
    /// Every `RCPT TO` for this address since the rule was set, including those accepted
    /// after the responses ran out.
    pub attempts: usize,
}

/// Why a rule was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChaosError {
    /// The address is empty, too long or contains spaces or control characters.
    InvalidEmail,
    /// More than [`MAX_RESPONSES`] responses.
    TooManyResponses,
    /// Response number `index` is invalid (`field`: what is wrong with it).
    InvalidResponse {
        index: usize,
        field: &'static str,
        reason: String,
    },
    /// [`MAX_RULES`] rules exist already.
    TooManyRules,
}

impl fmt::Display for ChaosError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChaosError::InvalidEmail => {
                f.write_str("the address must be 1 to 320 characters without spaces")
            }
            ChaosError::TooManyResponses => {
                write!(f, "a rule holds at most {MAX_RESPONSES} responses")
            }
            ChaosError::InvalidResponse {
                index,
                field,
                reason,
            } => write!(f, "responses[{index}].{field} {reason}"),
            ChaosError::TooManyRules => write!(f, "at most {MAX_RULES} rules can exist at once"),
        }
    }
}

impl std::error::Error for ChaosError {}

struct Rule {
    responses: Vec<ChaosResponse>,
    consumed: usize,
    attempts: usize,
}

/// The rules in force, shared by every SMTP connection and the HTTP API.
#[derive(Default)]
pub(crate) struct Chaos {
    rules: Mutex<BTreeMap<String, Rule>>,
}

fn normalize(email: &str) -> Result<String, ChaosError> {
    let email = email.trim();
    if email.is_empty()
        || email.len() > 320
        || email.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ChaosError::InvalidEmail);
    }
    Ok(email.to_lowercase())
}

impl Chaos {
    fn rules(&self) -> MutexGuard<'_, BTreeMap<String, Rule>> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replace the rule for `email` (its progress starts again from the first response).
    pub(crate) fn set(
        &self,
        email: &str,
        responses: Vec<ChaosResponse>,
    ) -> Result<ChaosRule, ChaosError> {
        let email = normalize(email)?;
        if responses.len() > MAX_RESPONSES {
            return Err(ChaosError::TooManyResponses);
        }
        for (index, response) in responses.iter().enumerate() {
            if let Some((field, reason)) = response.problem() {
                return Err(ChaosError::InvalidResponse {
                    index,
                    field,
                    reason,
                });
            }
        }
        let mut rules = self.rules();
        if rules.len() >= MAX_RULES && !rules.contains_key(&email) {
            return Err(ChaosError::TooManyRules);
        }
        let rule = Rule {
            responses,
            consumed: 0,
            attempts: 0,
        };
        let view = view(&email, &rule);
        rules.insert(email, rule);
        Ok(view)
    }

    pub(crate) fn get(&self, email: &str) -> Option<ChaosRule> {
        let email = normalize(email).ok()?;
        self.rules().get(&email).map(|rule| view(&email, rule))
    }

    pub(crate) fn list(&self) -> Vec<ChaosRule> {
        self.rules()
            .iter()
            .map(|(email, rule)| view(email, rule))
            .collect()
    }

    /// Remove the rule for `email`; whether there was one.
    pub(crate) fn remove(&self, email: &str) -> bool {
        normalize(email).is_ok_and(|email| self.rules().remove(&email).is_some())
    }

    pub(crate) fn clear(&self) {
        self.rules().clear();
    }

    /// The response for a `RCPT TO` naming `recipient`, consuming it; `None` means accept.
    pub(crate) fn next(&self, recipient: &str) -> Option<ChaosResponse> {
        let mut rules = self.rules();
        if rules.is_empty() {
            return None;
        }
        let rule = rules.get_mut(&recipient.to_lowercase())?;
        rule.attempts += 1;
        let response = rule.responses.get(rule.consumed)?.clone();
        rule.consumed += 1;
        Some(response)
    }
}

fn view(email: &str, rule: &Rule) -> ChaosRule {
    ChaosRule {
        email: email.to_string(),
        responses: rule.responses.clone(),
        consumed: rule.consumed,
        attempts: rule.attempts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_consumed_in_order_then_accepted() {
        let chaos = Chaos::default();
        chaos
            .set(
                "Alice@Example.com",
                vec![
                    ChaosResponse::reply(Stage::Rcpt, 451),
                    ChaosResponse::Disconnect { stage: Stage::Data },
                ],
            )
            .unwrap();
        assert_eq!(chaos.next("bob@example.com"), None);
        assert_eq!(
            chaos.next("alice@EXAMPLE.com"),
            Some(ChaosResponse::reply(Stage::Rcpt, 451))
        );
        assert_eq!(
            chaos.next("alice@example.com"),
            Some(ChaosResponse::Disconnect { stage: Stage::Data })
        );
        assert_eq!(chaos.next("alice@example.com"), None);
        let rule = chaos.get("ALICE@example.com").unwrap();
        assert_eq!((rule.consumed, rule.attempts), (2, 3));
        assert!(chaos.remove("alice@example.com"));
        assert!(chaos.list().is_empty());
    }

    #[test]
    fn invalid_rules_are_refused() {
        let chaos = Chaos::default();
        assert_eq!(
            chaos.set(" ", vec![]).unwrap_err(),
            ChaosError::InvalidEmail
        );
        let error = chaos
            .set(
                "a@b",
                vec![
                    ChaosResponse::Accept,
                    ChaosResponse::reply(Stage::Rcpt, 250),
                ],
            )
            .unwrap_err();
        assert!(
            matches!(
                error,
                ChaosError::InvalidResponse {
                    index: 1,
                    field: "code",
                    ..
                }
            ),
            "{error:?}"
        );
        let error = chaos
            .set(
                "a@b",
                vec![ChaosResponse::Reply {
                    stage: Stage::Data,
                    code: 554,
                    text: "bad\r\n250 ok".to_string(),
                }],
            )
            .unwrap_err();
        assert!(
            matches!(
                error,
                ChaosError::InvalidResponse {
                    index: 0,
                    field: "text",
                    ..
                }
            ),
            "{error:?}"
        );
    }
}
