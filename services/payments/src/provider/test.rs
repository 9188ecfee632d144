//! The built-in `test` provider, for local runs, the demo and tests: deterministic by payment
//! method, like Stripe's test cards, and keeping its own side (intents and refunds under its own
//! ids, in tables of its own) the way a real provider does.
//!
//! | payment method | outcome on confirmation |
//! |---|---|
//! | `pm_card_visa`, `pm_card_mastercard`, `pm_card_amex`, `pm_card_visa_debit` | succeeds (or waits for capture) |
//! | `pm_card_chargeDeclined` | fails, `generic_decline` |
//! | `pm_card_chargeDeclinedInsufficientFunds` | fails, `insufficient_funds` |
//! | `pm_card_chargeDeclinedLostCard` / `...StolenCard` | fails, `lost_card` / `stolen_card` |
//! | `pm_card_chargeDeclinedExpiredCard` | fails, `expired_card` |
//! | `pm_card_chargeDeclinedIncorrectCvc` | fails, `incorrect_cvc` |
//! | `pm_card_threeDSecureRequired` (`pm_card_authenticationRequired`) | `requires_action` until the customer authenticates |
//! | `pm_card_refundFail` | succeeds; its refunds fail afterwards |
//!
//! Any other payment method is unknown. Calls are idempotent like Stripe's: an object created
//! with a key gets an id derived from it, and a repeated state change with the key that made it
//! answers the object as it is. After every change it sends a signed webhook (`Stripe-Signature`
//! scheme) to the service, as a provider would.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kit::Secret;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio_util::task::TaskTracker;

use crate::batch::{BatchFuture, Batcher};

use super::{Call, CreateIntent, CreateRefund, Intent, Provider, ProviderError, RefundView};
use crate::domain::{CancellationReason, ProviderName, RefundStatus, hex, random_hex, signature};

/// What a payment method does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Succeed {
        refunds_fail: bool,
    },
    Decline {
        code: &'static str,
        decline_code: Option<&'static str>,
        message: &'static str,
    },
    Authenticate,
}

fn behaviour(payment_method: &str) -> Option<Behaviour> {
    const DECLINED: &str = "card_declined";
    let decline = |decline_code, message| Behaviour::Decline {
        code: DECLINED,
        decline_code: Some(decline_code),
        message,
    };
    Some(match payment_method {
        "pm_card_visa" | "pm_card_mastercard" | "pm_card_amex" | "pm_card_visa_debit" => {
            Behaviour::Succeed {
                refunds_fail: false,
            }
        }
        "pm_card_refundFail" => Behaviour::Succeed { refunds_fail: true },
        "pm_card_chargeDeclined" => decline("generic_decline", "Your card was declined."),
        "pm_card_chargeDeclinedInsufficientFunds" => {
            decline("insufficient_funds", "Your card has insufficient funds.")
        }
        "pm_card_chargeDeclinedLostCard" => decline("lost_card", "Your card was declined."),
        "pm_card_chargeDeclinedStolenCard" => decline("stolen_card", "Your card was declined."),
        "pm_card_chargeDeclinedExpiredCard" => Behaviour::Decline {
            code: "expired_card",
            decline_code: None,
            message: "Your card has expired.",
        },
        "pm_card_chargeDeclinedIncorrectCvc" => Behaviour::Decline {
            code: "incorrect_cvc",
            decline_code: None,
            message: "Your card's security code is incorrect.",
        },
        "pm_card_threeDSecureRequired" | "pm_card_authenticationRequired" => {
            Behaviour::Authenticate
        }
        _ => return None,
    })
}

/// Whether the test provider knows `payment_method` (checked before anything is written).
pub fn knows_payment_method(payment_method: &str) -> bool {
    behaviour(payment_method).is_some()
}

/// An id for the object created with `key`: the same key, the same object.
fn derived_id(prefix: &str, key: &str) -> String {
    format!("{prefix}{}", &hex(&Sha256::digest(key.as_bytes()))[..24])
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct IntentRow {
    id: String,
    amount: i64,
    currency: String,
    capture_method: String,
    payment_method: Option<String>,
    status: String,
    client_secret: String,
    amount_received: i64,
    last_error: Option<Value>,
    next_action: Option<Value>,
    cancellation_reason: Option<String>,
    last_key: Option<String>,
    metadata: Value,
    created_at: DateTime<Utc>,
}

impl IntentRow {
    /// Stripe's PaymentIntent shape.
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "amount_received": self.amount_received,
            "currency": self.currency.to_ascii_lowercase(),
            "capture_method": self.capture_method,
            "payment_method": self.payment_method,
            "status": self.status,
            "client_secret": self.client_secret,
            "last_payment_error": self.last_error,
            "next_action": self.next_action,
            "cancellation_reason": self.cancellation_reason,
            "metadata": self.metadata,
            "created": self.created_at.timestamp(),
            "livemode": false,
        })
    }

    fn intent(&self) -> Result<Intent, ProviderError> {
        Intent::from_json(&self.to_json()).map_err(ProviderError::Unavailable)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct RefundRow {
    id: String,
    payment_intent: String,
    amount: i64,
    status: String,
    failure_reason: Option<String>,
    metadata: Value,
    created_at: DateTime<Utc>,
}

impl RefundRow {
    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "refund",
            "payment_intent": self.payment_intent,
            "amount": self.amount,
            "status": self.status,
            "failure_reason": self.failure_reason,
            "metadata": self.metadata,
            "created": self.created_at.timestamp(),
        })
    }

    fn view(&self) -> Result<RefundView, ProviderError> {
        RefundView::from_json(&self.to_json()).map_err(ProviderError::Unavailable)
    }
}

/// Where and how the provider sends its webhooks.
#[derive(Clone)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: Secret,
    /// How long after a change its webhook is sent (at once when the service stops).
    pub delay: Duration,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub http: reqwest::Client,
    /// Sends still running at shutdown are awaited within the grace period.
    pub tasks: TaskTracker,
}

/// Why a customer's authentication was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthenticateError {
    NotFound,
    /// Wrong client secret (answered like an unknown intent, so ids do not leak).
    Forbidden,
    /// The intent is not waiting for authentication.
    NotRequired(String),
    /// The provider's storage failed.
    Unavailable(String),
}

pub struct TestProvider {
    db: PgPool,
    /// Intents made, and intents confirmed with a succeeding card, by requests waiting at the
    /// same moment share a statement.
    create_batch: Batcher<Value, Option<IntentRow>>,
    succeed_batch: Batcher<Value, Option<IntentRow>>,
    webhook_secret: Secret,
    webhooks: Option<WebhookTarget>,
    /// Prefix of the URL a customer is sent to for 3-D Secure:
    /// `<base>/test-provider/payment_intents/<id>/authenticate`.
    action_base: String,
}

macro_rules! intent_columns {
    () => {
        "id, amount, currency, capture_method, payment_method, status, client_secret,
         amount_received, last_error, next_action, cancellation_reason, last_key, metadata,
         created_at"
    };
}

/// Succeeds (or, for a manual capture, authorizes) an intent.
macro_rules! succeed {
    () => {
        "status = CASE WHEN capture_method = 'manual' THEN 'requires_capture' ELSE 'succeeded' END,
         amount_received = CASE WHEN capture_method = 'manual' THEN 0 ELSE amount END"
    };
}

impl TestProvider {
    /// `webhooks: None` sends none (only reconciliation then learns what happened).
    pub fn new(
        db: PgPool,
        webhook_secret: Secret,
        webhooks: Option<WebhookTarget>,
        action_base: String,
    ) -> TestProvider {
        TestProvider {
            create_batch: Batcher::start(db.connect_options(), BATCH, create_batch),
            succeed_batch: Batcher::start(db.connect_options(), BATCH, succeed_batch),
            db,
            webhook_secret,
            webhooks,
            action_base,
        }
    }

    fn send(&self, event_type: &str, object: Value) {
        if let Some(target) = &self.webhooks {
            send(target, event_type, object);
        }
    }

    async fn find(&self, id: &str) -> Result<Option<IntentRow>, ProviderError> {
        sqlx::query_as::<_, IntentRow>(concat!(
            "SELECT ",
            intent_columns!(),
            " FROM test_provider_intents WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.db)
        .await
        .map_err(unavailable)
    }

    /// After an update that matched nothing: the intent as a repeat of the call that made its
    /// state, or why not.
    async fn unchanged(&self, id: &str, key: &str) -> Result<Intent, ProviderError> {
        match self.find(id).await? {
            None => Err(ProviderError::NotFound),
            Some(row) if row.last_key.as_deref() == Some(key) => row.intent(),
            Some(row) => Err(ProviderError::UnexpectedState(format!(
                "the payment intent is {}",
                row.status
            ))),
        }
    }

    fn changed(&self, row: &IntentRow) -> Result<Intent, ProviderError> {
        let event = match row.status.as_str() {
            "succeeded" => Some("payment_intent.succeeded"),
            "requires_capture" => Some("payment_intent.amount_capturable_updated"),
            "requires_action" => Some("payment_intent.requires_action"),
            "canceled" => Some("payment_intent.canceled"),
            "requires_payment_method" if row.last_error.is_some() => {
                Some("payment_intent.payment_failed")
            }
            _ => None,
        };
        if let Some(event) = event {
            self.send(event, row.to_json());
        }
        row.intent()
    }

    /// The customer completes (or fails) 3-D Secure on the page `next_action` sent them to.
    pub async fn authenticate(
        &self,
        id: &str,
        client_secret: &str,
        succeed: bool,
    ) -> Result<Intent, AuthenticateError> {
        let statement = if succeed {
            concat!(
                "UPDATE test_provider_intents SET next_action = NULL, ",
                succeed!(),
                " WHERE id = $1 AND client_secret = $2 AND status = 'requires_action'
                 RETURNING ",
                intent_columns!()
            )
        } else {
            concat!(
                "UPDATE test_provider_intents SET next_action = NULL,
                     status = 'requires_payment_method', last_error = $3
                 WHERE id = $1 AND client_secret = $2 AND status = 'requires_action'
                 RETURNING ",
                intent_columns!()
            )
        };
        let failure = json!({
            "type": "invalid_request_error",
            "code": "payment_intent_authentication_failure",
            "message": "The provided PaymentMethod has failed authentication.",
        });
        let mut query = sqlx::query_as::<_, IntentRow>(statement)
            .bind(id)
            .bind(client_secret);
        if !succeed {
            query = query.bind(&failure);
        }
        let updated = query
            .fetch_optional(&self.db)
            .await
            .map_err(|err| AuthenticateError::Unavailable(err.to_string()))?;
        let failed = |err: ProviderError| AuthenticateError::Unavailable(err.to_string());
        match updated {
            Some(row) => self.changed(&row).map_err(failed),
            None => match self.find(id).await.map_err(failed)? {
                Some(row) if row.client_secret != client_secret => {
                    Err(AuthenticateError::Forbidden)
                }
                Some(row) => Err(AuthenticateError::NotRequired(row.status)),
                None => Err(AuthenticateError::NotFound),
            },
        }
    }

    /// The refund of an intent paid with `pm_card_refundFail` fails after it was accepted, as a
    /// bank refusing it later would; the webhook says so.
    async fn fail_later(&self, refund: &RefundRow) {
        let db = self.db.clone();
        let id = refund.id.clone();
        match self.webhooks.clone() {
            Some(target) => {
                target.tasks.clone().spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Some(failed) = fail_refund(&db, &id).await {
                        send(&target, "refund.updated", failed.to_json());
                    }
                });
            }
            // Without webhooks only reading it tells: it has failed by the time anyone reads.
            None => {
                fail_refund(&db, &id).await;
            }
        }
    }
}

/// Requests sharing one statement, at most.
const BATCH: usize = 64;

/// Outputs in the inputs' order, matched by intent id.
fn by_id(items: &[Value], rows: Vec<IntentRow>) -> Vec<Option<IntentRow>> {
    items
        .iter()
        .map(|item| {
            rows.iter()
                .find(|row| item["id"].as_str() == Some(row.id.as_str()))
                .cloned()
        })
        .collect()
}

fn create_batch<'c>(
    conn: &'c mut sqlx::PgConnection,
    items: &'c [Value],
) -> BatchFuture<'c, Option<IntentRow>> {
    Box::pin(async move {
        let rows = sqlx::query_as::<_, IntentRow>(concat!(
            "INSERT INTO test_provider_intents
                 (id, amount, currency, capture_method, payment_method, status, client_secret,
                  metadata, last_key)
             SELECT r.id, r.amount, r.currency, r.capture_method, r.payment_method, r.status,
                 r.client_secret, r.metadata, r.last_key
             FROM jsonb_to_recordset($1) AS r (id text, amount bigint, currency text,
                 capture_method text, payment_method text, status text, client_secret text,
                 metadata jsonb, last_key text)
             ON CONFLICT (id) DO NOTHING
             RETURNING ",
            intent_columns!()
        ))
        .bind(sqlx::types::Json(items))
        .fetch_all(conn)
        .await?;
        Ok(by_id(items, rows))
    })
}

fn succeed_batch<'c>(
    conn: &'c mut sqlx::PgConnection,
    items: &'c [Value],
) -> BatchFuture<'c, Option<IntentRow>> {
    Box::pin(async move {
        let rows = sqlx::query_as::<_, IntentRow>(
            "UPDATE test_provider_intents t SET
                 status = CASE WHEN t.capture_method = 'manual' THEN 'requires_capture'
                     ELSE 'succeeded' END,
                 amount_received = CASE WHEN t.capture_method = 'manual' THEN 0 ELSE t.amount END,
                 payment_method = r.payment_method, last_error = NULL, next_action = NULL,
                 last_key = r.key
             FROM jsonb_to_recordset($1) AS r (id text, payment_method text, key text)
             WHERE t.id = r.id AND t.status IN ('requires_payment_method', 'requires_confirmation')
               AND t.id = ANY (ARRAY(SELECT jsonb_array_elements($1) ->> 'id'))
             RETURNING t.id, t.amount, t.currency, t.capture_method, t.payment_method, t.status,
                 t.client_secret, t.amount_received, t.last_error, t.next_action,
                 t.cancellation_reason, t.last_key, t.metadata, t.created_at",
        )
        .bind(sqlx::types::Json(items))
        .fetch_all(conn)
        .await?;
        Ok(by_id(items, rows))
    })
}

/// Posts `object` as a signed `event_type` event, in the background.
fn send(target: &WebhookTarget, event_type: &str, object: Value) {
    let event = json!({
        "id": format!("evt_test_{}", uuid::Uuid::now_v7().simple()),
        "object": "event",
        "type": event_type,
        "created": Utc::now().timestamp(),
        "livemode": false,
        "data": {"object": object},
    });
    let body = event.to_string();
    let target = target.clone();
    target.tasks.clone().spawn(async move {
        tokio::select! {
            () = tokio::time::sleep(target.delay) => {}
            () = target.shutdown.cancelled() => {}
        }
        // A few quick tries, as a provider retries; a webhook still lost is what reconciliation
        // is for.
        for attempt in 0..4u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * 2u64.pow(attempt))).await;
            }
            let header = signature::sign(
                target.secret.expose().as_bytes(),
                Utc::now().timestamp(),
                body.as_bytes(),
            );
            let sent = target
                .http
                .post(&target.url)
                .header(signature::PROVIDER_HEADER, header)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => return,
                Ok(response) => {
                    tracing::debug!(status = %response.status(), "test provider webhook refused")
                }
                Err(err) => tracing::debug!(error = %err, "test provider webhook not sent"),
            }
        }
        tracing::warn!("test provider webhook given up after 4 tries");
    });
}

async fn fail_refund(db: &PgPool, id: &str) -> Option<RefundRow> {
    let mut tx = db.begin().await.ok()?;
    let failed: RefundRow = sqlx::query_as(
        "UPDATE test_provider_refunds SET status = 'failed', failure_reason = 'expired_or_canceled_card'
         WHERE id = $1 AND status = 'pending'
         RETURNING id, payment_intent, amount, status, failure_reason, metadata, created_at",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .ok()??;
    sqlx::query(
        "UPDATE test_provider_intents SET amount_refunded = amount_refunded - $2 WHERE id = $1",
    )
    .bind(&failed.payment_intent)
    .bind(failed.amount)
    .execute(&mut *tx)
    .await
    .ok()?;
    tx.commit().await.ok()?;
    Some(failed)
}

/// Seed data: the provider's side of a payment written as it is (`status` in Stripe's terms).
pub struct SeedIntent<'a> {
    pub id: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub payment_method: Option<&'a str>,
    pub status: &'a str,
    pub amount_received: i64,
    pub amount_refunded: i64,
    pub last_error: Option<Value>,
}

/// Writes a seeded intent (unless it exists); its client secret.
pub async fn seed_intent(
    conn: &mut sqlx::PgConnection,
    seed: &SeedIntent<'_>,
) -> sqlx::Result<String> {
    let secret = format!("{}_secret_{}", seed.id, random_hex(12));
    sqlx::query_scalar(
        "INSERT INTO test_provider_intents (id, amount, currency, capture_method, payment_method,
             status, client_secret, amount_received, amount_refunded, last_error)
         VALUES ($1, $2, $3, 'automatic', $4, $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id
         RETURNING client_secret",
    )
    .bind(seed.id)
    .bind(seed.amount)
    .bind(seed.currency)
    .bind(seed.payment_method)
    .bind(seed.status)
    .bind(&secret)
    .bind(seed.amount_received)
    .bind(seed.amount_refunded)
    .bind(&seed.last_error)
    .fetch_one(conn)
    .await
}

/// Writes a seeded, succeeded refund (unless it exists).
pub async fn seed_refund(
    conn: &mut sqlx::PgConnection,
    id: &str,
    payment_intent: &str,
    amount: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO test_provider_refunds (id, payment_intent, amount, status)
         VALUES ($1, $2, $3, 'succeeded') ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(payment_intent)
    .bind(amount)
    .execute(conn)
    .await?;
    Ok(())
}

fn unavailable(err: sqlx::Error) -> ProviderError {
    ProviderError::Unavailable(format!("test provider storage: {err}"))
}

impl Provider for TestProvider {
    fn name(&self) -> ProviderName {
        ProviderName::Test
    }

    fn webhook_secret(&self) -> Option<&Secret> {
        Some(&self.webhook_secret)
    }

    fn create_intent<'a>(&'a self, request: &'a CreateIntent) -> Call<'a, Intent> {
        Box::pin(async move {
            if let Some(method) = &request.payment_method
                && !knows_payment_method(method)
            {
                return Err(ProviderError::InvalidPaymentMethod(method.clone()));
            }
            let id = derived_id("pi_test_", &request.idempotency_key);
            let secret = format!("{id}_secret_{}", random_hex(12));
            let status = if request.payment_method.is_some() {
                "requires_confirmation"
            } else {
                "requires_payment_method"
            };
            let metadata: serde_json::Map<String, Value> = request
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            // The same key answers the intent it created, unchanged.
            let inserted = self
                .create_batch
                .call(json!({
                    "id": id,
                    "amount": request.amount,
                    "currency": request.currency.code(),
                    "capture_method": request.capture_method.as_str(),
                    "payment_method": request.payment_method,
                    "status": status,
                    "client_secret": secret,
                    "metadata": metadata,
                    "last_key": request.idempotency_key,
                }))
                .await
                .map_err(unavailable)?;
            match inserted {
                Some(row) => row.intent(),
                None => self
                    .find(&id)
                    .await?
                    .ok_or(ProviderError::NotFound)?
                    .intent(),
            }
        })
    }

    fn confirm_intent<'a>(
        &'a self,
        id: &'a str,
        payment_method: &'a str,
        key: &'a str,
    ) -> Call<'a, Intent> {
        Box::pin(async move {
            let Some(behaviour) = behaviour(payment_method) else {
                return Err(ProviderError::InvalidPaymentMethod(
                    payment_method.to_owned(),
                ));
            };
            const SUCCEED: &str = concat!(
                "UPDATE test_provider_intents SET ",
                succeed!(),
                ", payment_method = $2, last_error = $3, next_action = $4, last_key = $5
                 WHERE id = $1 AND status IN ('requires_payment_method', 'requires_confirmation')
                 RETURNING ",
                intent_columns!()
            );
            const DECLINE: &str = concat!(
                "UPDATE test_provider_intents SET status = 'requires_payment_method',
                     payment_method = $2, last_error = $3, next_action = $4, last_key = $5
                 WHERE id = $1 AND status IN ('requires_payment_method', 'requires_confirmation')
                 RETURNING ",
                intent_columns!()
            );
            const AUTHENTICATE: &str = concat!(
                "UPDATE test_provider_intents SET status = 'requires_action',
                     payment_method = $2, last_error = $3, next_action = $4, last_key = $5
                 WHERE id = $1 AND status IN ('requires_payment_method', 'requires_confirmation')
                 RETURNING ",
                intent_columns!()
            );
            let (statement, error, action) = match behaviour {
                Behaviour::Succeed { .. } => (SUCCEED, None, None),
                Behaviour::Decline {
                    code,
                    decline_code,
                    message,
                } => (
                    DECLINE,
                    Some(json!({"type": "card_error", "code": code,
                        "decline_code": decline_code, "message": message})),
                    None,
                ),
                Behaviour::Authenticate => (
                    AUTHENTICATE,
                    None,
                    Some(json!({
                        "type": "redirect_to_url",
                        "redirect_to_url": {
                            "url": format!("{}/test-provider/payment_intents/{id}/authenticate", self.action_base),
                            "return_url": null,
                        }
                    })),
                ),
            };
            let updated = if statement == SUCCEED {
                self.succeed_batch
                    .call(json!({"id": id, "payment_method": payment_method, "key": key}))
                    .await
            } else {
                sqlx::query_as::<_, IntentRow>(statement)
                    .bind(id)
                    .bind(payment_method)
                    .bind(error)
                    .bind(action)
                    .bind(key)
                    .fetch_optional(&self.db)
                    .await
            }
            .map_err(unavailable)?;
            match updated {
                Some(row) => self.changed(&row),
                None => self.unchanged(id, key).await,
            }
        })
    }

    fn cancel_intent<'a>(
        &'a self,
        id: &'a str,
        reason: Option<CancellationReason>,
        key: &'a str,
    ) -> Call<'a, Intent> {
        Box::pin(async move {
            let updated = sqlx::query_as::<_, IntentRow>(concat!(
                "UPDATE test_provider_intents SET status = 'canceled', cancellation_reason = $2,
                     next_action = NULL, last_key = $3
                 WHERE id = $1 AND status IN ('requires_payment_method', 'requires_confirmation',
                     'requires_action', 'requires_capture')
                 RETURNING ",
                intent_columns!()
            ))
            .bind(id)
            .bind(reason.map(CancellationReason::as_str))
            .bind(key)
            .fetch_optional(&self.db)
            .await
            .map_err(unavailable)?;
            match updated {
                Some(row) => self.changed(&row),
                None => self.unchanged(id, key).await,
            }
        })
    }

    fn capture_intent<'a>(
        &'a self,
        id: &'a str,
        amount: Option<i64>,
        key: &'a str,
    ) -> Call<'a, Intent> {
        Box::pin(async move {
            let updated = sqlx::query_as::<_, IntentRow>(concat!(
                "UPDATE test_provider_intents SET status = 'succeeded',
                     amount_received = COALESCE($2, amount), last_key = $3
                 WHERE id = $1 AND status = 'requires_capture' AND COALESCE($2, amount) BETWEEN 1 AND amount
                 RETURNING ",
                intent_columns!()
            ))
            .bind(id)
            .bind(amount)
            .bind(key)
            .fetch_optional(&self.db)
            .await
            .map_err(unavailable)?;
            match updated {
                Some(row) => self.changed(&row),
                None => match self.find(id).await? {
                    Some(row) if row.status == "requires_capture" => Err(ProviderError::Rejected {
                        code: Some("amount_too_large".into()),
                        message: format!("amount_to_capture must be at most {}", row.amount),
                    }),
                    _ => self.unchanged(id, key).await,
                },
            }
        })
    }

    fn retrieve_intent<'a>(&'a self, id: &'a str) -> Call<'a, Intent> {
        Box::pin(async move {
            self.find(id)
                .await?
                .ok_or(ProviderError::NotFound)?
                .intent()
        })
    }

    fn create_refund<'a>(&'a self, request: &'a CreateRefund) -> Call<'a, RefundView> {
        Box::pin(async move {
            let id = derived_id("re_test_", &request.idempotency_key);
            let mut tx = self.db.begin().await.map_err(unavailable)?;
            let existing: Option<RefundRow> = sqlx::query_as(
                "SELECT id, payment_intent, amount, status, failure_reason, metadata, created_at
                 FROM test_provider_refunds WHERE id = $1",
            )
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
            if let Some(existing) = existing {
                return existing.view();
            }
            // The provider's own guard: never more back than it received.
            let method: Option<Option<String>> = sqlx::query_scalar(
                "UPDATE test_provider_intents SET amount_refunded = amount_refunded + $2
                 WHERE id = $1 AND status = 'succeeded' AND amount_refunded + $2 <= amount_received
                 RETURNING payment_method",
            )
            .bind(&request.payment_intent)
            .bind(request.amount)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
            let Some(method) = method else {
                drop(tx);
                return match self.find(&request.payment_intent).await? {
                    None => Err(ProviderError::NotFound),
                    Some(row) if row.status != "succeeded" => Err(ProviderError::UnexpectedState(
                        format!("the payment intent is {}", row.status),
                    )),
                    Some(_) => Err(ProviderError::Rejected {
                        code: Some("amount_too_large".into()),
                        message: "the refund exceeds what is left to refund".into(),
                    }),
                };
            };
            let fails_later = method
                .as_deref()
                .and_then(behaviour)
                .is_some_and(|b| b == Behaviour::Succeed { refunds_fail: true });
            let status = if fails_later {
                RefundStatus::Pending
            } else {
                RefundStatus::Succeeded
            };
            let refund: RefundRow = sqlx::query_as(
                "INSERT INTO test_provider_refunds (id, payment_intent, amount, status, metadata)
                 VALUES ($1, $2, $3, $4, $5)
                 RETURNING id, payment_intent, amount, status, failure_reason, metadata, created_at",
            )
            .bind(&id)
            .bind(&request.payment_intent)
            .bind(request.amount)
            .bind(status.as_str())
            .bind(Value::Object(
                request
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            ))
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            if fails_later {
                self.fail_later(&refund).await;
            } else {
                self.send("refund.updated", refund.to_json());
            }
            refund.view()
        })
    }

    fn retrieve_refund<'a>(&'a self, id: &'a str) -> Call<'a, RefundView> {
        Box::pin(async move {
            let row: Option<RefundRow> = sqlx::query_as(
                "SELECT id, payment_intent, amount, status, failure_reason, metadata, created_at
                 FROM test_provider_refunds WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&self.db)
            .await
            .map_err(unavailable)?;
            row.ok_or(ProviderError::NotFound)?.view()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_methods_behave_like_stripes_test_cards() {
        assert_eq!(
            behaviour("pm_card_visa"),
            Some(Behaviour::Succeed {
                refunds_fail: false
            })
        );
        assert!(matches!(
            behaviour("pm_card_chargeDeclinedInsufficientFunds"),
            Some(Behaviour::Decline {
                decline_code: Some("insufficient_funds"),
                ..
            })
        ));
        assert_eq!(
            behaviour("pm_card_threeDSecureRequired"),
            Some(Behaviour::Authenticate)
        );
        assert_eq!(behaviour("pm_card_bogus"), None);
        assert_eq!(derived_id("pi_test_", "k"), derived_id("pi_test_", "k"));
        assert_ne!(derived_id("pi_test_", "k"), derived_id("pi_test_", "l"));
    }
}
