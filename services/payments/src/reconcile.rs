//! Reconciliation: every `interval`, each payment or refund that has stayed unfinished for
//! longer than `age` is re-read from its provider and what the provider says is applied (cause
//! `reconciliation`). This repairs what a crash between a provider's answer and our commit left
//! behind, and a webhook that never came:
//!
//! - a payment whose provider side was never recorded is created again with the key it was
//!   first created with (the provider answers the intent it made then, never a second one);
//! - a refund never sent is sent with its own key, one never settled is re-read.
//!
//! Each payment or refund is re-read at most once per `age`, so a payment legitimately waiting
//! (for a payment method, for its user) costs one provider read per period.

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::apply::{self, Context, Effects};
use crate::config::ReconcileConfig;
use crate::notify::Notifier;
use crate::provider::{self, Intent, Providers, RefundView};
use crate::store::payments::{self as payment_store, PaymentRow};
use crate::store::refunds::{self as refund_store, RefundRow};
use crate::store::webhooks;

pub struct Reconciler {
    pub db: PgPool,
    pub providers: Providers,
    pub notifier: Notifier,
    pub config: ReconcileConfig,
}

/// What a round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub payments_read: usize,
    pub refunds_read: usize,
    pub changed: usize,
    pub failed: usize,
}

impl Reconciler {
    /// Runs rounds until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(self.config.interval) => {}
            }
            match self.round().await {
                Ok(round) if round.changed > 0 || round.failed > 0 => {
                    tracing::info!(?round, "reconciliation round")
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "reconciliation round failed"),
            }
            match webhooks::prune_provider_events(&self.db, self.config.event_retention).await {
                Ok(0) => {}
                Ok(pruned) => tracing::info!(pruned, "forgot old provider events"),
                Err(err) => tracing::warn!(error = %err, "cannot prune provider events"),
            }
        }
    }

    /// One pass over what is stale.
    pub async fn round(&self) -> sqlx::Result<Round> {
        let mut round = Round::default();
        let limit = i64::from(self.config.batch);
        for payment in payment_store::stale(&self.db, self.config.age, limit).await? {
            round.payments_read += 1;
            match self.payment(&payment).await {
                Ok(true) => round.changed += 1,
                Ok(false) => {}
                Err(err) => {
                    round.failed += 1;
                    tracing::warn!(payment = %payment.uuid, error = %err, "cannot reconcile a payment");
                }
            }
        }
        for refund in refund_store::stale(&self.db, self.config.age, limit).await? {
            round.refunds_read += 1;
            match self.refund(&refund).await {
                Ok(true) => round.changed += 1,
                Ok(false) => {}
                Err(err) => {
                    round.failed += 1;
                    tracing::warn!(refund = %refund.uuid, error = %err, "cannot reconcile a refund");
                }
            }
        }
        Ok(round)
    }

    /// Re-reads one payment; whether it changed.
    async fn payment(&self, payment: &PaymentRow) -> anyhow::Result<bool> {
        let provider = self
            .providers
            .get(payment.provider)
            .ok_or_else(|| anyhow::anyhow!("provider {} is not configured", payment.provider))?;
        let intent: Intent = match &payment.provider_payment_id {
            Some(id) => provider.retrieve_intent(id).await?,
            None => {
                provider
                    .create_intent(&provider::intent_request(payment)?)
                    .await?
            }
        };
        let mut tx = self.db.begin().await?;
        let Some(row) =
            payment_store::lock_and_note(&mut tx, payment.uuid, &apply::note(&intent)).await?
        else {
            return Ok(false);
        };
        let before = row.version;
        let mut effects = Effects::default();
        let row = apply::intent(
            &mut tx,
            row,
            &intent,
            None,
            &Context::reconciliation(),
            &mut effects,
        )
        .await?;
        payment_store::mark_reconciled(&mut *tx, row.id).await?;
        tx.commit().await?;
        self.notifier.committed(effects);
        Ok(row.version != before || payment.provider_payment_id.is_none())
    }

    /// Re-reads (or sends) one pending refund; whether it changed.
    async fn refund(&self, refund: &RefundRow) -> anyhow::Result<bool> {
        let Some(payment) = payment_store::find(&self.db, refund.payment_uuid).await? else {
            return Ok(false);
        };
        let provider = self
            .providers
            .get(payment.provider)
            .ok_or_else(|| anyhow::anyhow!("provider {} is not configured", payment.provider))?;
        let view: RefundView = match &refund.provider_refund_id {
            Some(id) => provider.retrieve_refund(id).await?,
            None => {
                let request = provider::refund_request(&payment, refund)
                    .ok_or_else(|| anyhow::anyhow!("a refunded payment without a provider id"))?;
                provider.create_refund(&request).await?
            }
        };
        let mut tx = self.db.begin().await?;
        let mut effects = Effects::default();
        let settled = apply::settle_refund(
            &mut tx,
            payment.id,
            refund.id,
            &view,
            &Context::reconciliation(),
            &mut effects,
        )
        .await?;
        refund_store::mark_reconciled(&mut *tx, refund.id).await?;
        tx.commit().await?;
        self.notifier.committed(effects);
        Ok(settled.status != refund.status)
    }
}
