//! One-click unsubscribe links (RFC 8058) for notifications: the link carries the address and
//! the category, signed with HMAC-SHA256 under `app.unsubscribe_secret`, so the endpoint needs
//! no lookup and a link cannot be forged for another address. Links do not expire (a mail read
//! months later must still unsubscribe); changing the secret invalidates every link sent.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::domain::Category;

pub struct UnsubscribeKey(hmac::Key);

impl UnsubscribeKey {
    pub fn new(secret: &str) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()))
    }

    /// The token for `email` (compared lower-cased) and `category`.
    pub fn token(&self, email: &str, category: Category) -> String {
        let payload = format!("{}:{}", category.as_str(), email.to_lowercase());
        let tag = hmac::sign(&self.0, payload.as_bytes());
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// The address and category of a token this key signed.
    pub fn verify(&self, token: &str) -> Option<(String, Category)> {
        let (payload, tag) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.0, &payload, &tag).ok()?;
        let payload = String::from_utf8(payload).ok()?;
        let (category, email) = payload.split_once(':')?;
        Some((email.to_owned(), Category::parse(category)?))
    }

    /// The link for `List-Unsubscribe`, under the service's public URL.
    pub fn link(&self, public_url: &str, email: &str, category: Category) -> String {
        format!(
            "{public_url}/api/mail/v1/unsubscribe?token={}",
            self.token(email, category)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_cannot_be_forged() {
        let key = UnsubscribeKey::new("a secret of some length");
        let token = key.token("Ada@Example.com", Category::Notification);
        assert_eq!(
            key.verify(&token),
            Some(("ada@example.com".to_owned(), Category::Notification))
        );
        let other = UnsubscribeKey::new("another secret entirely");
        assert_eq!(other.verify(&token), None);
        let (_, tag) = token.split_once('.').unwrap();
        let forged = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode("notification:bob@example.com")
        );
        assert_eq!(key.verify(&forged), None);
        assert_eq!(key.verify("garbage"), None);
    }
}
