//! Events published by the auth service. Every service keeps a small local copy of the users
//! it needs (the *simple user* table: UUID, email, name, roles, active flag) and keeps it
//! current from these.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A user signed up (or was created by an administrator).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRegistered {
    pub user: Uuid,
    pub email: String,
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

crate::event!(UserRegistered, "auth.user.registered", 1, user);

/// A user's profile, roles or active flag changed; carries the complete new state so that
/// consumers can overwrite their copy (and ignore updates older than the one they have).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUpdated {
    pub user: Uuid,
    pub email: String,
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    pub is_active: bool,
}

crate::event!(UserUpdated, "auth.user.updated", 1, user);

/// A user was deleted; consumers soft-delete their copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDeleted {
    pub user: Uuid,
}

crate::event!(UserDeleted, "auth.user.deleted", 1, user);

/// A deleted user was restored; consumers clear their copy's deletion mark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRestored {
    pub user: Uuid,
}

crate::event!(UserRestored, "auth.user.restored", 1, user);

/// What a mail carrying a single-use link needs: auth builds both link mails from one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkMail {
    pub user: Uuid,
    pub email: String,
    pub name: String,
    pub token: String,
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// A user must confirm their email address (after signing up, or on request): the mail
/// service sends `url` to `email`.
///
/// `token` is a secret (whoever has it verifies the address); it is single-use, expires at
/// `expires_at`, and the auth service keeps only its hash. Consumers must not log it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailVerificationRequested {
    pub user: Uuid,
    pub email: String,
    pub name: String,
    pub token: String,
    /// The link to send: the auth service's `app.verify_email_url` with the token filled in.
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

crate::event!(
    EmailVerificationRequested,
    "auth.email.verification_requested",
    1,
    user
);

/// A user asked to reset their password: the mail service sends `url` to `email`. Published
/// only for existing, active accounts (the HTTP answer is the same either way).
///
/// `token` is a secret, as in [`EmailVerificationRequested`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordResetRequested {
    pub user: Uuid,
    pub email: String,
    pub name: String,
    pub token: String,
    /// The link to send: the auth service's `app.reset_password_url` with the token filled in.
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

crate::event!(
    PasswordResetRequested,
    "auth.password.reset_requested",
    1,
    user
);

impl From<LinkMail> for EmailVerificationRequested {
    fn from(link: LinkMail) -> Self {
        let LinkMail {
            user,
            email,
            name,
            token,
            url,
            expires_at,
        } = link;
        Self {
            user,
            email,
            name,
            token,
            url,
            expires_at,
        }
    }
}

impl From<LinkMail> for PasswordResetRequested {
    fn from(link: LinkMail) -> Self {
        let LinkMail {
            user,
            email,
            name,
            token,
            url,
            expires_at,
        } = link;
        Self {
            user,
            email,
            name,
            token,
            url,
            expires_at,
        }
    }
}

/// A user asked to change their email address to `email`: the mail service sends `url` to
/// `email` (the new address); following it completes the change. `old_email` is the address the
/// account has until then.
///
/// `token` is a secret, as in [`EmailVerificationRequested`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailChangeRequested {
    pub user: Uuid,
    /// The new address: where the link goes.
    pub email: String,
    pub old_email: String,
    pub name: String,
    pub token: String,
    /// The link to send: the auth service's `app.change_email_url` with the token filled in.
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

crate::event!(EmailChangeRequested, "auth.email.change_requested", 1, user);

/// A user's email address changed from `email` to `new_email`: the mail service tells the old
/// address (`email`), so its owner learns of a change they did not make. The new state reaches
/// other services as `auth.user.updated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailChanged {
    pub user: Uuid,
    /// The old address: where the notice goes.
    pub email: String,
    pub new_email: String,
    pub name: String,
}

crate::event!(EmailChanged, "auth.email.changed", 1, user);
