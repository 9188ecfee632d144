//! Helpers for tests (and for debugging against a real broker): a unique prefix per test, a
//! tap that sees what is published, raw publishing, and cleaning up a test's exchange and
//! queues so the shared broker does not fill up.

use std::time::Duration;

use futures_util::StreamExt;
use kit::SecretUrl;
use kit::config::AmqpSettings;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};

use crate::envelope::CloudEvent;
use crate::topology::Topology;

/// The local RabbitMQ: `HATCHERY_TEST_AMQP_URL`, else `amqp://guest:guest@127.0.0.1:5672/%2f`.
pub fn amqp_url() -> String {
    std::env::var("HATCHERY_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// `host:port` of the test broker ([`amqp_url`]), for a proxy in front of it.
pub fn amqp_address() -> String {
    let url = amqp_url();
    let authority = url.split("://").nth(1).unwrap_or(&url);
    let authority = authority.split('/').next().unwrap_or(authority);
    authority.rsplit('@').next().unwrap_or(authority).to_owned()
}

/// A prefix no other test uses: `test-<uuid>`.
pub fn unique_prefix() -> String {
    format!("test-{}", uuid::Uuid::now_v7().simple())
}

/// Bus settings for a test: the local RabbitMQ, a unique prefix, short delays.
pub fn settings() -> AmqpSettings {
    AmqpSettings {
        url: Some(SecretUrl::new(amqp_url())),
        prefix: unique_prefix(),
        retry_delay: Duration::from_millis(50),
        retry_max_delay: Duration::from_millis(400),
        reconnect_max_delay: Duration::from_millis(500),
        outbox_poll: Duration::from_millis(200),
        // A test's queues go away by themselves once it is over.
        queue_expires: Some(Duration::from_secs(120)),
        ..AmqpSettings::default()
    }
}

/// Opens a connection and channel on `url`.
pub async fn channel(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let connection = crate::connection::connect(&SecretUrl::new(url), "test").await?;
    let channel = connection.create_channel().await?;
    Ok((connection, channel))
}

/// Deletes the queues of `services` under `prefix` and the prefix's exchange. Best effort.
pub async fn cleanup(url: &str, settings: &AmqpSettings, services: &[&str]) {
    let Ok((connection, channel)) = channel(url).await else {
        return;
    };
    for (index, service) in services.iter().enumerate() {
        Topology::from_settings(service, settings)
            .delete(&channel, index + 1 == services.len())
            .await;
    }
    if services.is_empty() {
        let _ = channel
            .exchange_delete(
                format!("{}.events", settings.prefix).into(),
                Default::default(),
            )
            .await;
    }
    connection.close(200, "cleanup".into()).await.ok();
}

/// Publishes raw `body` to `<prefix>.events` with `routing_key`, confirmed; for feeding
/// consumers messages no well-behaved producer would send.
pub struct RawPublisher {
    connection: Connection,
    channel: Channel,
    exchange: String,
}

impl RawPublisher {
    pub async fn new(url: &str, prefix: &str) -> anyhow::Result<RawPublisher> {
        let (connection, channel) = channel(url).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let exchange = format!("{prefix}.events");
        crate::topology::declare_exchange(&channel, &exchange).await?;
        Ok(RawPublisher {
            connection,
            channel,
            exchange,
        })
    }

    /// Sends without waiting for the confirm; [`Self::confirm_all`] waits for all.
    pub async fn send(&self, routing_key: &str, body: &[u8]) -> anyhow::Result<()> {
        self.channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        Ok(())
    }

    /// Waits until RabbitMQ confirmed everything sent so far.
    pub async fn confirm_all(&self) -> anyhow::Result<()> {
        self.channel.wait_for_confirms().await?;
        Ok(())
    }

    pub async fn close(self) {
        self.connection.close(200, "done".into()).await.ok();
    }
}

/// A private queue bound to `<prefix>.events`: sees every event published with a matching
/// routing key from the moment it exists.
pub struct Tap {
    connection: Connection,
    consumer: lapin::Consumer,
}

impl Tap {
    pub async fn bind(url: &str, prefix: &str, pattern: &str) -> anyhow::Result<Tap> {
        let (connection, channel) = channel(url).await?;
        let exchange = format!("{prefix}.events");
        crate::topology::declare_exchange(&channel, &exchange).await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "tap".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Tap {
            connection,
            consumer,
        })
    }

    /// The next event and its AMQP properties, or `None` after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<(CloudEvent, BasicProperties)> {
        let delivery = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .ok()??
            .ok()?;
        delivery.ack(BasicAckOptions::default()).await.ok();
        let event = crate::envelope::decode(&delivery.data).ok()?;
        Some((event, delivery.properties))
    }

    pub async fn close(self) {
        self.connection.close(200, "done".into()).await.ok();
    }
}
