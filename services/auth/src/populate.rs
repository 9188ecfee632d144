//! Seed data: `populator/<scenario>/auth/*.yaml` → users (with passwords) and service clients,
//! get-or-create by UUID (an existing row is never changed, so local edits survive restarts).
//!
//! ```yaml
//! users:
//!   - id: 0193a000-0000-7000-8000-000000000001
//!     email: ada@hatchery.test
//!     name: Ada Admin
//!     roles: [admin]
//!     password: hatchery-ada
//!     email_verified: true        # default true
//! clients:
//!   - id: 0193a000-0000-7000-8000-00000000c001
//!     name: broker
//!     secret: hatchery-broker-secret
//!     scopes: [tickets:validate]
//! ```
//!
//! Passwords are hashed with the default (OWASP) argon2id cost, only when the user is created.

use chrono::Utc;
use futures_util::future::BoxFuture;
use populator::{Error, Keys, Report, Scenario, Spanned};
use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::config::Argon2Settings;
use crate::domain::{DisplayName, Email, Password, Roles, Scopes, TokenDigest};
use crate::passwords::{Hasher, Pool};
use crate::store::{clients, users};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default)]
    pub users: Vec<UserSeed>,
    #[serde(default)]
    pub clients: Vec<ClientSeed>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSeed {
    pub id: Spanned<Uuid>,
    pub email: Spanned<String>,
    pub name: Spanned<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub password: Spanned<String>,
    #[serde(default = "yes")]
    pub email_verified: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSeed {
    pub id: Spanned<Uuid>,
    pub name: Spanned<String>,
    pub secret: Spanned<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

fn yes() -> bool {
    true
}

pub fn load<'a>(
    conn: &'a mut PgConnection,
    scenario: &'a Scenario,
) -> BoxFuture<'a, Result<Report, Error>> {
    Box::pin(async move {
        let sources = scenario.read::<Document>(<crate::Auth as kit::Service>::NAME)?;
        let mut report = Report::default();
        let mut hasher: Option<Hasher> = None;
        let mut seen_users = Keys::new("user");
        for source in &sources {
            for user in &source.doc.users {
                let line = user.id.line();
                let email = Email::parse(&user.email.value)
                    .map_err(|why| source.error_at(user.email.line(), format!("email {why}")))?;
                let name = DisplayName::parse(&user.name.value)
                    .map_err(|why| source.error_at(user.name.line(), format!("name {why}")))?;
                let roles = Roles::parse(&user.roles)
                    .map_err(|why| source.error_at(line, format!("roles: {why}")))?;
                let password = Password::parse(user.password.value.clone()).map_err(|why| {
                    source.error_at(user.password.line(), format!("password {why}"))
                })?;
                seen_users.define(user.id.value, 0, source, line)?;
                if users::exists(&mut *conn, user.id.value)
                    .await
                    .map_err(|err| source.database_error(line, err))?
                {
                    report.record("users", false);
                    continue;
                }
                let hasher = match &hasher {
                    Some(hasher) => hasher,
                    None => hasher.insert(
                        Hasher::new(
                            Argon2Settings::default(),
                            Pool {
                                workers: 1,
                                nice: 0,
                            },
                        )
                        .map_err(|err| source.error_at(line, format!("{err:#}")))?,
                    ),
                };
                let hash = hasher
                    .hash(&password)
                    .await
                    .map_err(|err| source.error_at(line, format!("{err:#}")))?;
                let created = users::insert_if_absent(
                    &mut *conn,
                    &users::NewUser {
                        uuid: user.id.value,
                        email: &email,
                        name: &name,
                        roles: &roles.to_vec(),
                        password_hash: &hash,
                        email_verified_at: user.email_verified.then(Utc::now),
                    },
                )
                .await
                .map_err(|err| source.database_error(line, err))?;
                report.record("users", created);
            }
        }
        let mut seen_clients = Keys::new("client");
        for source in &sources {
            for client in &source.doc.clients {
                let line = client.id.line();
                let name = client.name.value.trim();
                if name.is_empty() || name.len() > 100 {
                    return Err(
                        source.error_at(client.name.line(), "name must be 1 to 100 characters")
                    );
                }
                if client.secret.value.len() < 16 {
                    return Err(source.error_at(
                        client.secret.line(),
                        "secret must be at least 16 characters",
                    ));
                }
                let scopes = Scopes::parse(&client.scopes)
                    .map_err(|why| source.error_at(line, format!("scopes: {why}")))?;
                seen_clients.define(client.id.value, 0, source, line)?;
                let created = clients::insert_if_absent(
                    &mut *conn,
                    client.id.value,
                    name,
                    &TokenDigest::of(&client.secret.value),
                    &scopes,
                )
                .await
                .map_err(|err| source.database_error(line, err))?;
                report.record("clients", created);
            }
        }
        Ok(report)
    })
}
