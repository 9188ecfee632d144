//! Exchange and queue names, and their idempotent declaration.
//!
//! - `<prefix>.events`: the one durable topic exchange; routing key = event type.
//! - `<prefix>.<service>`: the service's durable quorum queue, bound to the types (or
//!   patterns) it handles. A message returned to it more than [`DELIVERY_LIMIT`] times (a
//!   consumer that dies on it before acknowledging) is dead-lettered to the parking queue by
//!   RabbitMQ itself, so not even a crashing process can loop on a message forever.
//! - `<prefix>.<service>.retry.<delay>`: one quorum queue per retry delay, without consumers:
//!   a message sits there for its delay (`x-message-ttl`) and is then dead-lettered back to
//!   the service queue. Every message in one of these queues has the same TTL, so expiry at
//!   the head is exact (no plugin, stock RabbitMQ).
//! - `<prefix>.<service>.parking`: quorum queue of messages that cannot or could not be
//!   handled, with headers naming why; operators list and replay them.
//!
//! Queue arguments cannot change once a queue exists (RabbitMQ refuses the declaration), so
//! they are fixed here; tunables that differ per deployment (the retry delays) are part of
//! the retry queue names instead.

use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

/// Returns to the service queue after which RabbitMQ parks a message on its own.
pub const DELIVERY_LIMIT: i64 = 20;

/// The names of one service's exchange and queues.
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    service: String,
    retry_delays: Vec<Duration>,
    /// `amqp.queue_expires`: RabbitMQ deletes a queue unused this long (test prefixes).
    expires: Option<Duration>,
}

impl Topology {
    /// `retry_delay` is the wait before the second attempt; it doubles per further attempt up
    /// to `retry_max_delay`. `max_attempts` runs in all, so `max_attempts - 1` retries.
    pub fn new(
        prefix: &str,
        service: &str,
        max_attempts: u32,
        retry_delay: Duration,
        retry_max_delay: Duration,
    ) -> Self {
        let retry_delays = (1..max_attempts)
            .map(|failed| {
                let factor = 2u32.saturating_pow(failed - 1);
                retry_delay
                    .checked_mul(factor)
                    .unwrap_or(retry_max_delay)
                    .min(retry_max_delay)
            })
            .collect();
        Topology {
            prefix: prefix.to_owned(),
            service: service.to_owned(),
            retry_delays,
            expires: None,
        }
    }

    /// Queues declared from now on are deleted by RabbitMQ once unused for `after` (no
    /// consumer, no redeclaration): for throw-away prefixes such as tests'.
    pub fn expiring(mut self, after: Option<Duration>) -> Self {
        self.expires = after;
        self
    }

    /// From a service's settings.
    pub fn from_settings(service: &str, settings: &kit::config::AmqpSettings) -> Self {
        Self::new(
            &settings.prefix,
            service,
            settings.max_attempts,
            settings.retry_delay,
            settings.retry_max_delay,
        )
        .expiring(settings.queue_expires)
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// `<prefix>.events`.
    pub fn exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// `<prefix>.<service>`.
    pub fn queue(&self) -> String {
        format!("{}.{}", self.prefix, self.service)
    }

    /// `<prefix>.<service>.parking`.
    pub fn parking(&self) -> String {
        format!("{}.{}.parking", self.prefix, self.service)
    }

    /// Handler runs before a failing message is parked.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.retry_delays.len()).unwrap_or(u32::MAX - 1) + 1
    }

    /// The delay after the `failed`-th failed run, and the queue that implements it; `None`
    /// when no retry is left.
    pub fn retry_after(&self, failed: u32) -> Option<(String, Duration)> {
        let index = usize::try_from(failed).ok()?.checked_sub(1)?;
        let delay = *self.retry_delays.get(index)?;
        Some((self.retry_queue(delay), delay))
    }

    fn retry_queue(&self, delay: Duration) -> String {
        format!(
            "{}.{}.retry.{}ms",
            self.prefix,
            self.service,
            delay.as_millis()
        )
    }

    /// Every distinct retry queue with its delay.
    pub fn retry_queues(&self) -> Vec<(String, Duration)> {
        let mut delays = self.retry_delays.clone();
        delays.dedup();
        delays
            .into_iter()
            .map(|d| (self.retry_queue(d), d))
            .collect()
    }

    /// Declares the exchange (what a publisher needs).
    pub async fn declare_exchange(&self, channel: &Channel) -> lapin::Result<()> {
        declare_exchange(channel, &self.exchange()).await
    }

    /// Declares the exchange, the service's queues and the bindings of `routing_keys`.
    pub async fn declare_consumer(
        &self,
        channel: &Channel,
        routing_keys: &[String],
    ) -> lapin::Result<()> {
        self.declare_exchange(channel).await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .queue_declare(self.parking().into(), durable, self.queue_args())
            .await?;
        let mut main = self.queue_args();
        dead_letter_to(&mut main, &self.parking());
        main.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(DELIVERY_LIMIT),
        );
        channel
            .queue_declare(self.queue().into(), durable, main)
            .await?;
        for (name, delay) in self.retry_queues() {
            let mut args = self.queue_args();
            dead_letter_to(&mut args, &self.queue());
            let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
            channel.queue_declare(name.into(), durable, args).await?;
        }
        for key in routing_keys {
            channel
                .queue_bind(
                    self.queue().into(),
                    self.exchange().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// A quorum queue, expiring when configured.
    fn queue_args(&self) -> FieldTable {
        let mut args = quorum();
        if let Some(after) = self.expires {
            let millis = i64::try_from(after.as_millis()).unwrap_or(i64::MAX).max(1);
            args.insert("x-expires".into(), AMQPValue::LongLongInt(millis));
        }
        args
    }

    /// Deletes the service's queues and, with `exchange`, the exchange (tests clean up with
    /// this; never needed in production). Errors are ignored: best effort.
    pub async fn delete(&self, channel: &Channel, exchange: bool) {
        let mut queues = vec![self.queue(), self.parking()];
        queues.extend(self.retry_queues().into_iter().map(|(name, _)| name));
        for queue in queues {
            let _ = channel
                .queue_delete(queue.into(), QueueDeleteOptions::default())
                .await;
        }
        if exchange {
            let _ = channel
                .exchange_delete(self.exchange().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
}

/// Declares the durable topic exchange `name` (`<prefix>.events`).
pub async fn declare_exchange(channel: &Channel, name: &str) -> lapin::Result<()> {
    channel
        .exchange_declare(
            name.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    args
}

/// Dead-letters to `queue` through the default exchange, at least once: RabbitMQ keeps the
/// message until the target queue confirmed it (needs `reject-publish` overflow).
fn dead_letter_to(args: &mut FieldTable, queue: &str) {
    args.insert("x-dead-letter-exchange".into(), long_string(""));
    args.insert("x-dead-letter-routing-key".into(), long_string(queue));
    args.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once"),
    );
    args.insert("x-overflow".into(), long_string("reject-publish"));
}

pub(crate) fn long_string(text: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(text))
}

/// A short string from text that may be too long for one (255 bytes): cut at a character
/// boundary rather than panicking.
pub(crate) fn short_string(text: &str) -> ShortString {
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    ShortString::from(&text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention() {
        let t = Topology::new(
            "hatchery",
            "mail",
            5,
            Duration::from_secs(1),
            Duration::from_secs(5),
        );
        assert_eq!(t.exchange(), "hatchery.events");
        assert_eq!(t.queue(), "hatchery.mail");
        assert_eq!(t.parking(), "hatchery.mail.parking");
        assert_eq!(t.max_attempts(), 5);
    }

    #[test]
    fn retry_delays_double_up_to_the_ceiling() {
        let t = Topology::new("p", "s", 5, Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<_> = (1..5).map(|n| t.retry_after(n).unwrap().1).collect();
        assert_eq!(
            delays,
            [1, 2, 4, 5].map(Duration::from_secs),
            "1s, 2s, 4s, then capped"
        );
        assert_eq!(t.retry_after(1).unwrap().0, "p.s.retry.1000ms");
        assert!(t.retry_after(5).is_none(), "the fifth failure parks");
        assert!(t.retry_after(0).is_none());
        assert_eq!(t.retry_queues().len(), 4);
        let once = Topology::new("p", "s", 1, Duration::from_secs(1), Duration::from_secs(1));
        assert!(once.retry_after(1).is_none());
        assert_eq!(once.max_attempts(), 1);
    }

    #[test]
    fn short_strings_never_panic() {
        assert_eq!(short_string(&"é".repeat(200)).as_str().len(), 254);
    }
}
