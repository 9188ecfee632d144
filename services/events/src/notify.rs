//! Realtime pushes after a change committed, through the broker (Redis PUBLISH, the `realtime`
//! crate): an event's availability on the public topic `events.event_<uuid>`, and a user's own
//! registration changes on `notifications.user_<uuid>`. Fire and forget: a push lost while
//! Redis is down is not retried (pages read the API). Availability is ordered by the time it was
//! read after the commit, so a late push never shows older numbers over newer ones.

use serde_json::{Value, json};
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::seats::Seats;

#[derive(Clone)]
pub struct Notifier {
    events: Option<realtime::Publisher>,
    notifications: Option<realtime::Publisher>,
    tasks: TaskTracker,
}

/// What changed for one user.
#[derive(Debug, Clone)]
pub struct UserPush {
    pub user: Uuid,
    pub registration: Uuid,
    pub event: Uuid,
    pub status: String,
}

impl Notifier {
    pub fn new(
        events: Option<realtime::Publisher>,
        notifications: Option<realtime::Publisher>,
        tasks: TaskTracker,
    ) -> Self {
        Notifier {
            events,
            notifications,
            tasks,
        }
    }

    /// Publishes the event's availability as it is in `seats`.
    pub fn availability(&self, seats: &Seats, waitlisted: Option<i64>) {
        let data = json!({
            "type": "availability",
            "event": seats.event.uuid,
            "capacity": seats.event.capacity,
            "taken": seats.event.taken,
            "left": seats.left(),
            "waitlisted": waitlisted,
            "status": seats.event.status,
        });
        // Read after the commit: a later push carries later numbers.
        let order = chrono::Utc::now().timestamp_micros() as f64;
        self.push_event(seats.event.uuid, data, Some(order));
    }

    /// Tells each user what happened to their registration.
    pub fn users(&self, pushes: Vec<UserPush>) {
        let Some(publisher) = self.notifications.clone() else {
            return;
        };
        for push in pushes {
            let publisher = publisher.clone();
            let data = json!({
                "type": "registration",
                "registration": push.registration,
                "event": push.event,
                "status": push.status,
            });
            self.spawn(async move {
                let topic = format!("user_{}", push.user);
                if let Err(err) = publisher
                    .publish(&topic, &data, realtime::PublishOptions::new())
                    .await
                {
                    tracing::warn!(error = %err, user = %push.user, "realtime push lost");
                }
            });
        }
    }

    /// A message on the event's public topic.
    pub fn push_event(&self, event: Uuid, data: Value, order: Option<f64>) {
        let Some(publisher) = self.events.clone() else {
            return;
        };
        self.spawn(async move {
            let topic = contracts::events::event_topic(event);
            let mut options = realtime::PublishOptions::new();
            if let Some(order) = order {
                options = options.order(order).order_key("availability");
            }
            if let Err(err) = publisher.publish(&topic, &data, options).await {
                tracing::warn!(error = %err, %event, "realtime push lost");
            }
        });
    }

    fn spawn(&self, send: impl Future<Output = ()> + Send + 'static) {
        match kit::request_id::current() {
            Some(id) => self.tasks.spawn(kit::request_id::scope(id, send)),
            None => self.tasks.spawn(send),
        };
    }
}
