//! What happens after a change has committed: the paying user's realtime push and waking the
//! partner webhook sender.
//!
//! Pushes go to `notifications.user_<uuid>` through the broker (the `realtime` crate, a Redis
//! PUBLISH), ordered by the payment's version (`order_key` per payment), so a slow push
//! overtaken by a newer one is dropped by the broker rather than shown over it. They are fire
//! and forget: a push lost while Redis is down is not retried (the page reads the payment).

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::apply::Effects;

/// The realtime service every user's notifications topic belongs to.
pub const NOTIFICATIONS: &str = "notifications";

#[derive(Clone)]
pub struct Notifier {
    realtime: Option<realtime::Publisher>,
    deliveries: Arc<Notify>,
    tasks: TaskTracker,
}

impl Notifier {
    /// `realtime: None` (no Redis) pushes nothing.
    pub fn new(
        realtime: Option<realtime::Publisher>,
        deliveries: Arc<Notify>,
        tasks: TaskTracker,
    ) -> Notifier {
        Notifier {
            realtime,
            deliveries,
            tasks,
        }
    }

    /// Call once the transaction that produced `effects` has committed.
    pub fn committed(&self, effects: Effects) {
        if effects.deliveries > 0 {
            self.deliveries.notify_one();
        }
        let Some(publisher) = &self.realtime else {
            return;
        };
        let request_id = kit::request_id::current();
        for push in effects.pushes {
            let publisher = publisher.clone();
            let request_id = request_id.clone();
            let send = async move {
                let topic = format!("user_{}", push.user);
                let options = realtime::PublishOptions::new()
                    .order(f64::from(push.version))
                    .order_key(format!("payment_{}", push.payment));
                if let Err(err) = publisher.publish(&topic, &push.data, options).await {
                    tracing::warn!(error = %err, payment = %push.payment, "realtime push lost");
                }
            };
            // The push names the request that caused it.
            match request_id {
                Some(id) => self.tasks.spawn(kit::request_id::scope(id, send)),
                None => self.tasks.spawn(send),
            };
        }
    }
}
