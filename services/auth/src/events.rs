//! What the service publishes (payloads in `contracts::auth`), always through the outbox, in
//! the transaction of the change it announces:
//!
//! | type | when |
//! |---|---|
//! | `auth.user.registered` | signup |
//! | `auth.user.updated` | name, roles or active flag changed (complete new state) |
//! | `auth.user.deleted` | an admin deleted the user |
//! | `auth.user.restored` | an admin restored the user |
//! | `auth.email.verification_requested` | signup, and `POST /email/resend` for an unverified account |
//! | `auth.password.reset_requested` | `POST /password/forgot` for an existing account |
//!
//! The last two carry the link's token (a secret, single-use, expiring) and the full link, so
//! the mail service needs nothing else. The service consumes nothing.

use chrono::{DateTime, Utc};
use contracts::Event;
use contracts::auth::{
    EmailVerificationRequested, LinkMail, PasswordResetRequested, UserDeleted, UserRegistered,
    UserRestored, UserUpdated,
};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::domain::OpaqueToken;
use crate::store::one_time::{self, Purpose};
use crate::store::users::UserRow;

type Tx<'a> = Transaction<'a, Postgres>;

pub async fn registered(tx: &mut Tx<'_>, user: &UserRow) -> sqlx::Result<()> {
    let event = UserRegistered {
        user: user.uuid,
        email: user.email.clone(),
        name: user.name.clone(),
        roles: user.roles.clone(),
    };
    bus::enqueue_as(tx, &event, user.uuid).await.map(|_| ())
}

/// `user` as it is now, changed by `actor`.
pub async fn updated(tx: &mut Tx<'_>, user: &UserRow, actor: Uuid) -> sqlx::Result<()> {
    let event = UserUpdated {
        user: user.uuid,
        email: user.email.clone(),
        name: user.name.clone(),
        roles: user.roles.clone(),
        is_active: user.is_active,
    };
    bus::enqueue_as(tx, &event, actor).await.map(|_| ())
}

pub async fn deleted(tx: &mut Tx<'_>, user: &UserRow, actor: Uuid) -> sqlx::Result<()> {
    bus::enqueue_as(tx, &UserDeleted { user: user.uuid }, actor)
        .await
        .map(|_| ())
}

pub async fn restored(tx: &mut Tx<'_>, user: &UserRow, actor: Uuid) -> sqlx::Result<()> {
    bus::enqueue_as(tx, &UserRestored { user: user.uuid }, actor)
        .await
        .map(|_| ())
}

/// Creates an email-verification token for `user` (valid for `ttl`) and publishes the
/// request for the mail.
pub async fn request_verification(
    tx: &mut Tx<'_>,
    user: &UserRow,
    ttl: std::time::Duration,
    url_template: &str,
) -> anyhow::Result<()> {
    request_link::<EmailVerificationRequested>(tx, user, Purpose::VerifyEmail, ttl, url_template)
        .await
}

/// Creates a password-reset token for `user` and publishes the request for the mail.
pub async fn request_password_reset(
    tx: &mut Tx<'_>,
    user: &UserRow,
    ttl: std::time::Duration,
    url_template: &str,
) -> anyhow::Result<()> {
    request_link::<PasswordResetRequested>(tx, user, Purpose::ResetPassword, ttl, url_template)
        .await
}

/// Stores a new one-time token for `purpose` (valid for `ttl`), sent to the user's current
/// address, and publishes the mail request `E` with its link (`url_template` with the token).
async fn request_link<E: Event + From<LinkMail>>(
    tx: &mut Tx<'_>,
    user: &UserRow,
    purpose: Purpose,
    ttl: std::time::Duration,
    url_template: &str,
) -> anyhow::Result<()> {
    let token = OpaqueToken::generate()?;
    let expires_at = expiry(ttl)?;
    one_time::insert(
        &mut **tx,
        purpose,
        &token.digest(),
        user.id,
        &user.email,
        expires_at,
    )
    .await?;
    let event = E::from(LinkMail {
        user: user.uuid,
        email: user.email.clone(),
        name: user.name.clone(),
        url: url_template.replace("{token}", token.expose()),
        token: token.into_string(),
        expires_at,
    });
    bus::enqueue_as(tx, &event, user.uuid).await?;
    Ok(())
}

fn expiry(ttl: std::time::Duration) -> anyhow::Result<DateTime<Utc>> {
    Ok(Utc::now() + chrono::Duration::from_std(ttl)?)
}
