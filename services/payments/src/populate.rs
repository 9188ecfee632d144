//! Seed data: `populator/<scenario>/payments/*.yaml` → rows, get-or-create by UUID. Seeded
//! payments belong to the built-in `test` provider, which gets its side of each (so a demo
//! admin can refund a seeded payment), and publish no events.
//!
//! ```yaml
//! users:
//!   - id: 0193a000-0000-7000-8000-000000000002
//!     email: bob@hatchery.test
//!     name: Bob Baker
//! payments:
//!   - id: 0193a000-0000-7000-8000-0000000b0001
//!     user: 0193a000-0000-7000-8000-000000000002
//!     amount: 2500
//!     currency: EUR
//!     description: Bread workshop, one seat
//!     reference: {service: events, id: 0193a000-0000-7000-8000-0000000e0001}
//!     source: 0193a000-0000-7000-8000-00000000c004   # who created it (default: the user)
//!     status: succeeded          # requires_payment_method | succeeded | failed | canceled
//!     payment_method: pm_card_visa
//!     decline_code: insufficient_funds   # failed only
//!     refunds:                   # succeeded refunds (succeeded payments only)
//!       - id: 0193a000-0000-7000-8000-0000000f0001
//!         amount: 500
//!     created_at: !ago 3d
//! ```

use chrono::Utc;
use futures_util::future::BoxFuture;
use populator::{Error, Keys, Report, Scenario, Spanned, When};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::apply::Context;
use crate::config::Config;
use crate::domain::{
    AmountLimits, CaptureMethod, Currency, Description, Money, PaymentMethodId, PaymentStatus,
    ProviderName, Reference, RefundStatus,
};
use crate::provider::test::{SeedIntent, seed_intent, seed_refund};
use crate::store::payments::{self as payment_store, NewHistory, NewPayment};
use crate::store::refunds::{self as refund_store, NewRefund};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default)]
    pub users: Vec<identity::users::UserSeed>,
    #[serde(default)]
    pub payments: Vec<PaymentSeed>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSeed {
    pub service: String,
    pub id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundSeed {
    pub id: Spanned<Uuid>,
    pub amount: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentSeed {
    pub id: Spanned<Uuid>,
    /// A user of this scenario.
    pub user: Spanned<Uuid>,
    pub amount: Spanned<i64>,
    pub currency: Spanned<String>,
    #[serde(default)]
    pub description: Option<String>,
    pub reference: Spanned<ReferenceSeed>,
    #[serde(default)]
    pub source: Option<Uuid>,
    pub status: Spanned<String>,
    #[serde(default)]
    pub payment_method: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub refunds: Vec<RefundSeed>,
    #[serde(default, deserialize_with = "populator::when::optional")]
    pub created_at: Option<When>,
}

/// Stripe's status of the provider's side of a seeded payment.
fn provider_status(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Failed => "requires_payment_method",
        other => other.as_str(),
    }
}

/// Loads the scenario's files for this service: users first, then their payments.
pub fn load<'a>(
    conn: &'a mut PgConnection,
    scenario: &'a Scenario,
) -> BoxFuture<'a, Result<Report, Error>> {
    Box::pin(async move {
        let sources = scenario.read::<Document>(<crate::Payments as kit::Service>::NAME)?;
        let now = Utc::now();
        let config = Config::default();
        let limits = AmountLimits {
            max_major: config.max_amount,
            per_currency: config.max_amounts,
        };
        let mut report = Report::default();
        let users = identity::users::seed(conn, &sources, |doc| &doc.users, &mut report).await?;
        let mut payments = Keys::new("payment");
        let mut refunds = Keys::new("refund");
        for source in &sources {
            for seed in &source.doc.payments {
                let line = seed.id.line();
                let user_id = users.resolve(&seed.user.value, source, seed.user.line())?;
                let currency = Currency::parse(&seed.currency.value).map_err(|why| {
                    source.error_at(seed.currency.line(), format!("currency {why}"))
                })?;
                let money = Money::new(seed.amount.value, currency, limits.max_minor(currency))
                    .map_err(|why| source.error_at(seed.amount.line(), format!("amount {why}")))?;
                let reference =
                    Reference::parse(&seed.reference.value.service, &seed.reference.value.id)
                        .map_err(|problems| {
                            let why: Vec<String> =
                                problems.iter().map(|(f, m)| format!("{f} {m}")).collect();
                            source.error_at(seed.reference.line(), why.join("; "))
                        })?;
                let status: PaymentStatus =
                    seed.status.value.parse().map_err(|why| {
                        source.error_at(seed.status.line(), format!("status {why}"))
                    })?;
                if !matches!(
                    status,
                    PaymentStatus::RequiresPaymentMethod
                        | PaymentStatus::Succeeded
                        | PaymentStatus::Failed
                        | PaymentStatus::Canceled
                ) {
                    return Err(source.error_at(
                        seed.status.line(),
                        "status of seeded payments is requires_payment_method, succeeded, failed or canceled",
                    ));
                }
                if let Some(method) = &seed.payment_method {
                    PaymentMethodId::parse(method)
                        .map_err(|why| source.error_at(line, format!("payment_method {why}")))?;
                }
                let description = seed
                    .description
                    .as_deref()
                    .map(Description::parse)
                    .transpose()
                    .map_err(|why| source.error_at(line, format!("description {why}")))?;
                let refunded: i64 = seed.refunds.iter().map(|r| r.amount).sum();
                if !seed.refunds.is_empty() && status != PaymentStatus::Succeeded {
                    return Err(source.error_at(line, "only a succeeded payment has refunds"));
                }
                if seed.refunds.iter().any(|r| r.amount <= 0) || refunded > money.amount() {
                    return Err(source.error_at(
                        line,
                        "refunds must be positive and at most the payment's amount in total",
                    ));
                }
                let created = write_payment(
                    conn,
                    &Seeded {
                        uuid: seed.id.value,
                        user_id,
                        money,
                        description: description.as_ref(),
                        reference: &reference,
                        source: seed.source.unwrap_or(seed.user.value),
                        status,
                        payment_method: seed.payment_method.as_deref(),
                        decline_code: seed.decline_code.as_deref(),
                        refunds: &seed.refunds,
                        created_at: seed.created_at.as_ref().map_or(now, |w| w.resolve(now)),
                    },
                )
                .await
                .map_err(|err| source.database_error(line, err))?;
                payments.define(seed.id.value, 0, source, line)?;
                for refund in &seed.refunds {
                    refunds.define(refund.id.value, 0, source, refund.id.line())?;
                }
                report.record("payments", created);
            }
        }
        Ok(report)
    })
}

struct Seeded<'a> {
    uuid: Uuid,
    user_id: i64,
    money: Money,
    description: Option<&'a Description>,
    reference: &'a Reference,
    source: Uuid,
    status: PaymentStatus,
    payment_method: Option<&'a str>,
    decline_code: Option<&'a str>,
    refunds: &'a [RefundSeed],
    created_at: chrono::DateTime<Utc>,
}

/// Writes one seeded payment with its provider side, history and refunds, unless it exists;
/// whether it was created.
async fn write_payment(conn: &mut PgConnection, seed: &Seeded<'_>) -> sqlx::Result<bool> {
    if payment_store::find(&mut *conn, seed.uuid).await?.is_some() {
        return Ok(false);
    }
    let amount = seed.money.amount();
    let id = payment_store::insert(
        conn,
        &NewPayment {
            uuid: seed.uuid,
            user_id: seed.user_id,
            amount,
            currency: seed.money.currency().code(),
            description: seed.description.map(Description::as_str),
            metadata: json!({}),
            reference_service: &seed.reference.service,
            reference_id: &seed.reference.id,
            source: seed.source,
            provider: ProviderName::Test,
            payment_method: seed.payment_method,
            capture_method: CaptureMethod::Automatic,
            status: seed.status,
            request_key: None,
            request_fingerprint: None,
            created_at: seed.created_at,
        },
    )
    .await?
    .id;
    let succeeded = seed.status == PaymentStatus::Succeeded;
    let captured = if succeeded { amount } else { 0 };
    let refunded: i64 = seed.refunds.iter().map(|r| r.amount).sum();
    let provider_id = format!("pi_test_seed_{}", seed.uuid.simple());
    let decline_code = seed.decline_code.unwrap_or("generic_decline");
    let failed = seed.status == PaymentStatus::Failed;
    let client_secret = seed_intent(
        conn,
        &SeedIntent {
            id: &provider_id,
            amount,
            currency: seed.money.currency().code(),
            payment_method: seed.payment_method,
            status: provider_status(seed.status),
            amount_received: captured,
            amount_refunded: refunded,
            last_error: failed.then(|| {
                json!({"type": "card_error", "code": "card_declined", "decline_code": decline_code,
                    "message": "Your card was declined."})
            }),
        },
    )
    .await?;
    payment_store::set_provider_side(conn, id, &provider_id, Some(&client_secret)).await?;
    payment_store::seed_amounts(conn, id, captured, refunded).await?;
    if failed {
        sqlx::query("UPDATE payments SET decline_code = $2, failure_message = $3 WHERE id = $1")
            .bind(id)
            .bind(decline_code)
            .bind("Your card was declined.")
            .execute(&mut *conn)
            .await?;
    }
    let ctx = Context::seed();
    payment_store::insert_history(
        conn,
        &NewHistory {
            payment_id: id,
            refund_id: None,
            from_status: None,
            to_status: seed.status.as_str(),
            cause: ctx.cause,
            provider_event_id: None,
            request_id: None,
            version: 1,
        },
    )
    .await?;
    for refund in seed.refunds {
        let provider_refund = format!("re_test_seed_{}", refund.id.value.simple());
        seed_refund(conn, &provider_refund, &provider_id, refund.amount).await?;
        let refund_id = refund_store::insert(
            conn,
            &NewRefund {
                uuid: refund.id.value,
                payment_id: id,
                amount: refund.amount,
                reason: None,
                metadata: json!({}),
                status: RefundStatus::Succeeded,
                provider_refund_id: Some(&provider_refund),
                source: seed.source,
                request_key: None,
                request_fingerprint: None,
                created_at: seed.created_at,
            },
        )
        .await?;
        payment_store::insert_history(
            conn,
            &NewHistory {
                payment_id: id,
                refund_id: Some(refund_id),
                from_status: None,
                to_status: RefundStatus::Succeeded.as_str(),
                cause: ctx.cause,
                provider_event_id: None,
                request_id: None,
                version: 1,
            },
        )
        .await?;
    }
    Ok(true)
}
