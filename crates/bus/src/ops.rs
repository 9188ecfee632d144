//! Operations: list parked messages, replay them, show the outbox lag. Services expose these
//! as `<service> events parked | replay | outbox` by plugging [`define`] and [`run`] into
//! `kit::Service::commands`.

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::{Arg, ArgAction, ArgGroup, ArgMatches, Command};
use kit::{Resources, SecretUrl};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, DeliveryTag, FieldTable};
use lapin::{Channel, Confirmation, Connection};

use crate::connection::{close_channel, close_connection};
use crate::consumer::{
    ATTEMPTS_HEADER, ERROR_HEADER, PARKED_AT_HEADER, REASON_HEADER, ROUTING_KEY_HEADER,
    header_text, header_u32,
};
use crate::topology::{Topology, long_string};

/// Header on a replayed message: when it was replayed.
pub const REPLAYED_AT_HEADER: &str = "x-bus-replayed-at";

/// A message in the parking queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// The event id (or the id given to a message that had none).
    pub id: String,
    pub event_type: Option<String>,
    /// `invalid_json`, `not_cloudevent`, `unknown_type`, `unsupported_dataversion`,
    /// `invalid_data`, `handler_failed`, or RabbitMQ's own `delivery_limit` (a message that
    /// was handed back too often, e.g. because it crashed the consumer process).
    pub reason: String,
    pub error: Option<String>,
    pub attempts: u32,
    pub parked_at: Option<String>,
    pub routing_key: Option<String>,
}

/// Up to `limit` parked messages (oldest first), and how many there are in all. Listing
/// takes the messages and hands them back, so it is safe while the service runs.
pub async fn parked(
    url: &SecretUrl,
    topology: &Topology,
    limit: usize,
) -> anyhow::Result<(Vec<Parked>, u32)> {
    let Some(parking) = ParkingQueue::open(url, topology).await? else {
        return Ok((Vec::new(), 0));
    };
    let total = parking.total;
    let mut listed = Vec::new();
    let mut last_tag = None;
    while listed.len() < limit && listed.len() < total as usize {
        let Some(delivery) = parking.take().await? else {
            break;
        };
        last_tag = Some(delivery.delivery_tag);
        listed.push(describe(&delivery));
    }
    if let Some(tag) = last_tag {
        parking.hand_back(tag, true).await?;
    }
    parking.close("listed").await;
    Ok((listed, total))
}

/// Which parked messages to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    One(String),
    All,
}

/// Moves the selected parked messages back to the service queue, with their attempts reset;
/// returns how many. Each copy is confirmed by RabbitMQ before the parked one is removed.
pub async fn replay(url: &SecretUrl, topology: &Topology, which: &Replay) -> anyhow::Result<usize> {
    let Some(parking) = ParkingQueue::open(url, topology).await? else {
        anyhow::bail!(
            "nothing to replay: there is no parking queue {} (this service consumes no events)",
            topology.parking()
        );
    };
    let channel = &parking.channel;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut replayed = 0;
    let mut kept = Vec::new();
    // Only what is parked now: a replayed message that fails again is parked anew, and must
    // not be picked up by this same run.
    for _ in 0..parking.total {
        let Some(delivery) = parking.take().await? else {
            break;
        };
        let id = describe(&delivery).id;
        let selected = match which {
            Replay::All => true,
            Replay::One(wanted) => &id == wanted,
        };
        if !selected {
            kept.push(delivery.delivery_tag);
            continue;
        }
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        let mut cleaned = FieldTable::default();
        for (key, value) in headers.inner() {
            if ![
                ATTEMPTS_HEADER,
                REASON_HEADER,
                ERROR_HEADER,
                PARKED_AT_HEADER,
            ]
            .contains(&key.as_str())
            {
                cleaned.insert(key.clone(), value.clone());
            }
        }
        headers = cleaned;
        headers.insert(
            REPLAYED_AT_HEADER.into(),
            long_string(&chrono::Utc::now().to_rfc3339()),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        let confirm = channel
            .basic_publish(
                "".into(),
                topology.queue().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => {}
            Confirmation::Ack(Some(_)) => {
                anyhow::bail!(
                    "queue {} does not exist (is the service running?)",
                    topology.queue()
                )
            }
            Confirmation::Nack(_) => anyhow::bail!("RabbitMQ refused the replayed message {id}"),
        }
        delivery.ack(BasicAckOptions::default()).await?;
        replayed += 1;
        if matches!(which, Replay::One(_)) {
            break;
        }
    }
    for tag in kept {
        parking.hand_back(tag, false).await?;
    }
    parking.close("replayed").await;
    if let Replay::One(id) = which
        && replayed == 0
    {
        anyhow::bail!("no parked message with id {id}");
    }
    Ok(replayed)
}

/// The parking queue as an operator command uses it: messages are taken one at a time, then
/// acknowledged (gone) or handed back.
struct ParkingQueue {
    connection: Connection,
    channel: Channel,
    queue: String,
    /// Messages in the queue when it was opened.
    total: u32,
}

impl ParkingQueue {
    /// `None` when the queue does not exist.
    async fn open(url: &SecretUrl, topology: &Topology) -> anyhow::Result<Option<ParkingQueue>> {
        let name = format!("{} operator", topology.service());
        let connection = crate::connection::connect(url, &name).await?;
        let channel = connection.create_channel().await?;
        let queue = topology.parking();
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        match declared {
            Ok(declared) => Ok(Some(ParkingQueue {
                connection,
                channel,
                queue,
                total: declared.message_count(),
            })),
            // RabbitMQ closes the channel on a missing queue: the service never consumed.
            Err(_) => {
                close_connection(&connection, "no parking queue").await;
                Ok(None)
            }
        }
    }

    /// The next message, unacknowledged; `None` when the queue is empty.
    async fn take(&self) -> anyhow::Result<Option<Delivery>> {
        let message = self
            .channel
            .basic_get(
                self.queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?;
        Ok(message.map(|message| message.delivery))
    }

    /// Hands the message `tag` (with `multiple`, every one up to it) back to the queue.
    async fn hand_back(&self, tag: DeliveryTag, multiple: bool) -> anyhow::Result<()> {
        let requeue = BasicNackOptions {
            multiple,
            requeue: true,
        };
        self.channel.basic_nack(tag, requeue).await?;
        Ok(())
    }

    /// Closes the channel (unacknowledged messages go back), then the connection.
    async fn close(self, reason: &str) {
        close_channel(&self.channel, reason).await;
        close_connection(&self.connection, reason).await;
    }
}

fn describe(delivery: &Delivery) -> Parked {
    let properties = &delivery.properties;
    let decoded = crate::envelope::decode(&delivery.data).ok();
    let id = properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .or_else(|| decoded.as_ref().map(|e| e.id.to_string()))
        .unwrap_or_else(|| format!("tag-{}", delivery.delivery_tag));
    let event_type = properties
        .kind()
        .as_ref()
        .map(|t| t.as_str().to_owned())
        .or_else(|| decoded.as_ref().map(|e| e.event_type.clone()));
    let reason = header_text(properties, REASON_HEADER)
        .or_else(|| death_reason(properties))
        .unwrap_or_else(|| "unknown".to_owned());
    Parked {
        id,
        event_type,
        reason,
        error: header_text(properties, ERROR_HEADER),
        attempts: header_u32(properties, ATTEMPTS_HEADER).unwrap_or(0),
        parked_at: header_text(properties, PARKED_AT_HEADER),
        routing_key: header_text(properties, ROUTING_KEY_HEADER),
    }
}

/// The reason RabbitMQ gave when it dead-lettered the message itself (`x-death`).
fn death_reason(properties: &lapin::BasicProperties) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = properties.headers().as_ref()?.inner().get("x-death")?
    else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    match first.inner().get("reason")? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

/// The `events` subcommand, for `kit::Commands::define`.
pub fn define() -> Vec<Command> {
    vec![
        Command::new("events")
            .about("Inspect and repair the event bus: parked messages, replays, outbox lag")
            .subcommand_required(true)
            .subcommand(
                Command::new("parked")
                    .about("List parked messages with their reasons")
                    .arg(
                        Arg::new("limit")
                            .long("limit")
                            .value_parser(clap::value_parser!(usize))
                            .default_value("100")
                            .help("Show at most this many"),
                    ),
            )
            .subcommand(
                Command::new("replay")
                    .about("Move parked messages back to the service's queue (attempts reset)")
                    .arg(
                        Arg::new("id")
                            .long("id")
                            .value_name("ID")
                            .help("The event id"),
                    )
                    .arg(
                        Arg::new("all")
                            .long("all")
                            .action(ArgAction::SetTrue)
                            .help("Every parked message"),
                    )
                    .group(ArgGroup::new("which").args(["id", "all"]).required(true)),
            )
            .subcommand(
                Command::new("outbox")
                    .about("Show the outbox lag: unpublished events and the age of the oldest"),
            ),
    ]
}

/// Runs the `events` subcommand, for `kit::Service::run_command`.
pub async fn run<A: Send + Sync>(
    name: &str,
    matches: &ArgMatches,
    resources: Resources<A>,
) -> anyhow::Result<()> {
    if name != "events" {
        anyhow::bail!("no such command: {name}");
    }
    let output = execute(matches, &resources).await?;
    print!("{output}");
    Ok(())
}

/// Runs the `events` subcommand and returns what it prints.
pub async fn execute<A>(matches: &ArgMatches, resources: &Resources<A>) -> anyhow::Result<String> {
    let settings = &resources.settings.amqp;
    let topology = Topology::from_settings(resources.name, settings);
    let url = || {
        settings
            .url
            .as_ref()
            .context("amqp.url is not set (AMQP_URL or <SERVICE>__AMQP__URL)")
    };
    let mut out = String::new();
    match matches.subcommand() {
        Some(("parked", sub)) => {
            let limit = sub.get_one::<usize>("limit").copied().unwrap_or(100);
            let (messages, total) = parked(url()?, &topology, limit).await?;
            writeln!(
                out,
                "{total} parked message(s) in {}{}",
                topology.parking(),
                if (total as usize) > messages.len() {
                    format!(", showing {}", messages.len())
                } else {
                    String::new()
                }
            )?;
            for message in messages {
                writeln!(
                    out,
                    "{}  {}  reason={}  attempts={}  parked_at={}  error={}",
                    message.id,
                    message.event_type.as_deref().unwrap_or("-"),
                    message.reason,
                    message.attempts,
                    message.parked_at.as_deref().unwrap_or("-"),
                    message.error.as_deref().unwrap_or("-"),
                )?;
            }
        }
        Some(("replay", sub)) => {
            let which = match sub.get_one::<String>("id") {
                Some(id) => Replay::One(id.clone()),
                None => Replay::All,
            };
            let count = replay(url()?, &topology, &which).await?;
            writeln!(out, "replayed {count} message(s) to {}", topology.queue())?;
        }
        Some(("outbox", _)) => {
            let lag = crate::outbox::lag(&resources.db).await?;
            let published = crate::outbox::published_count(&resources.db).await?;
            match lag.oldest_pending {
                Some(oldest) => writeln!(
                    out,
                    "{} unpublished event(s), oldest written {} ({:.1} s ago); {published} published kept",
                    lag.pending,
                    oldest.to_rfc3339(),
                    lag.oldest_age().as_secs_f64()
                )?,
                None => writeln!(out, "0 unpublished events; {published} published kept")?,
            }
        }
        _ => anyhow::bail!("events: expected parked, replay or outbox"),
    }
    Ok(out)
}
