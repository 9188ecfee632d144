//! Operator subcommands beyond kit's shared ones:
//!
//! ```text
//! auth keys rotate                               new active signing key; the old one stays published
//! auth keys list                                 kids, created, retired, sealed with which KEK
//! auth keys reencrypt                            every private key sealed under app.key_encryption_key
//! auth keys generate-kek                         prints a new random key-encryption key
//! auth clients create <name> [--scope S]...      prints the client id and secret (once)
//! auth clients list
//! auth events parked | replay | outbox           the bus's operations (bus::ops)
//! ```

use std::fmt::Write as _;

use anyhow::Context;
use clap::{Arg, ArgAction, ArgMatches, Command};
use kit::Resources;
use uuid::Uuid;

use crate::config::Config;
use crate::domain::{OpaqueToken, Scopes};
use crate::kek::{Kek, Keks};
use crate::store::{clients, keys as key_store};

/// The subcommands, for `kit::Service::commands`.
pub fn define() -> Vec<Command> {
    let mut commands = vec![
        Command::new("keys")
            .about("Manage the token signing keys")
            .subcommand_required(true)
            .subcommand(Command::new("rotate").about(
                "Make a new active signing key; the old one keeps verifying (and stays in the JWKS) until its tokens expire",
            ))
            .subcommand(Command::new("list").about("List the signing keys"))
            .subcommand(Command::new("reencrypt").about(
                "Seal every private signing key with app.key_encryption_key (after configuring a new one, with the old one as app.previous_key_encryption_key)",
            ))
            .subcommand(Command::new("generate-kek").about(
                "Print a new random key-encryption key (base64 of 32 bytes) for app.key_encryption_key",
            )),
        Command::new("clients")
            .about("Manage service clients (OAuth client credentials)")
            .subcommand_required(true)
            .subcommand(
                Command::new("create")
                    .about("Create a client; prints its id and secret (the secret is shown only this once)")
                    .arg(Arg::new("name").required(true).help("A name for the client, e.g. the calling service"))
                    .arg(
                        Arg::new("scope")
                            .long("scope")
                            .action(ArgAction::Append)
                            .help("A scope the client may request (repeat, or space-separate)"),
                    ),
            )
            .subcommand(Command::new("list").about("List the clients")),
    ];
    commands.extend(bus::ops::define());
    commands
}

/// Runs subcommand `name`, for `kit::Service::run_command`.
pub async fn run(
    name: &str,
    matches: &ArgMatches,
    resources: Resources<Config>,
) -> anyhow::Result<()> {
    let output = match name {
        "keys" => keys(matches, &resources).await?,
        "clients" => clients(matches, &resources).await?,
        _ => return bus::ops::run(name, matches, resources).await,
    };
    print!("{output}");
    Ok(())
}

async fn keys(matches: &ArgMatches, resources: &Resources<Config>) -> anyhow::Result<String> {
    let mut out = String::new();
    match matches.subcommand_name() {
        Some("rotate") => {
            let settings = &resources.settings;
            let keep = crate::keep_retired_keys(settings);
            let keks = Keks::from_settings(settings)?;
            let rotation =
                crate::keys::rotate(&resources.db, settings.app.key_publish_delay, keep, &keks)
                    .await?;
            writeln!(
                out,
                "new key: {} (published now, signs from {})",
                rotation.new_kid,
                rotation.activates_at.to_rfc3339()
            )?;
            if let Some(old) = &rotation.retired_kid {
                writeln!(
                    out,
                    "retired: {old} (signs until then, stays published {} longer)",
                    humantime_serde::re::humantime::format_duration(keep)
                )?;
            }
            if rotation.deleted > 0 {
                writeln!(out, "deleted {} expired key(s)", rotation.deleted)?;
            }
            writeln!(
                out,
                "running instances learn of it within app.key_reload ({})",
                humantime_serde::re::humantime::format_duration(settings.app.key_reload)
            )?;
        }
        Some("list") => {
            let now = chrono::Utc::now();
            for key in key_store::all(&resources.db).await? {
                let state = match key.retired_at {
                    _ if key.activates_at > now => {
                        format!("signs from {}", key.activates_at.to_rfc3339())
                    }
                    None => "active".to_owned(),
                    Some(at) if at > now => format!("active until {}", at.to_rfc3339()),
                    Some(at) => format!("retired {}", at.to_rfc3339()),
                };
                let sealed = match (&key.kek_id, &key.private_key) {
                    (Some(kek), _) => format!("sealed with key-encryption key {kek}"),
                    (None, Some(_)) => "STORED IN CLEAR (sealed at the next start)".to_owned(),
                    (None, None) => "no private key".to_owned(),
                };
                writeln!(
                    out,
                    "{}  created {}  {state}  {sealed}",
                    key.kid,
                    key.created_at.to_rfc3339()
                )?;
            }
        }
        Some("reencrypt") => {
            let keks = Keks::from_settings(&resources.settings)?;
            let done = crate::keys::seal(&resources.db, &keks, true).await?;
            writeln!(
                out,
                "sealed {} key(s) stored in clear and re-encrypted {} key(s); every private key is now sealed with key-encryption key {}",
                done.from_clear,
                done.resealed,
                keks.current().id()
            )?;
            if done.resealed > 0 {
                writeln!(
                    out,
                    "running instances keep their keys; remove app.previous_key_encryption_key once every instance has the new key-encryption key"
                )?;
            }
        }
        Some("generate-kek") => {
            writeln!(out, "{}", Kek::generate()?)?;
        }
        _ => anyhow::bail!("usage: auth keys rotate | list | reencrypt | generate-kek"),
    }
    Ok(out)
}

async fn clients(matches: &ArgMatches, resources: &Resources<Config>) -> anyhow::Result<String> {
    let mut out = String::new();
    match matches.subcommand() {
        Some(("create", sub)) => {
            let name = sub
                .get_one::<String>("name")
                .context("the client name is required")?
                .trim()
                .to_owned();
            anyhow::ensure!(
                !name.is_empty() && name.len() <= 100,
                "the client name must be 1 to 100 characters"
            );
            let scopes: Vec<String> = sub
                .get_many::<String>("scope")
                .into_iter()
                .flatten()
                .flat_map(|s| {
                    s.split_ascii_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .collect();
            let scopes = Scopes::parse(&scopes).map_err(|why| anyhow::anyhow!("--scope: {why}"))?;
            let id = Uuid::now_v7();
            let secret = OpaqueToken::generate()?;
            clients::insert_if_absent(&resources.db, id, &name, &secret.digest(), &scopes)
                .await
                .map_err(|err| match kit::error::violated_constraint(&err) {
                    Some("clients_name_key") => {
                        anyhow::anyhow!("a client named {name:?} exists already")
                    }
                    _ => anyhow::Error::new(err).context("storing the client"),
                })?;
            writeln!(out, "client_id:     {id}")?;
            writeln!(out, "client_secret: {}", secret.expose())?;
            writeln!(out, "scopes:        {}", scopes.joined())?;
            writeln!(
                out,
                "The secret is not stored in readable form: keep it now."
            )?;
        }
        Some(("list", _)) => {
            for client in clients::list(&resources.db).await? {
                let state = if client.disabled_at.is_some() {
                    "  disabled"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "{}  {}  [{}]{state}",
                    client.uuid,
                    client.name,
                    client.scopes.join(" ")
                )?;
            }
        }
        _ => anyhow::bail!("usage: auth clients create <name> [--scope S]... | list"),
    }
    Ok(out)
}
