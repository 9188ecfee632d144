//! Email addresses as the mail service accepts them: what the SMTP client can put in an
//! envelope and a `To:` header, and nothing a header could be smuggled through.

use std::fmt;
use std::str::FromStr;

/// A recipient address: at most 254 characters, a local part and a domain (an IDN is kept as
/// written; the SMTP client encodes it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(lettre::Address);

impl EmailAddress {
    pub const MAX_LEN: usize = 254;

    pub fn parse(input: &str) -> Result<EmailAddress, String> {
        let text = input.trim();
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if text.len() > Self::MAX_LEN {
            return Err(format!("must be at most {} characters", Self::MAX_LEN));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("{text:?} is not an email address"));
        }
        lettre::Address::from_str(text)
            .map(EmailAddress)
            .map_err(|_| format!("{text:?} is not an email address"))
    }

    /// `Name <address>` or a bare address (a configured sender, a `Reply-To`).
    pub fn parse_mailbox(input: &str) -> Result<lettre::message::Mailbox, String> {
        if input.contains(['\r', '\n']) {
            return Err("must be one line".into());
        }
        lettre::message::Mailbox::from_str(input.trim())
            .map_err(|_| format!("{input:?} is not an address such as `Name <name@example.com>`"))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }

    /// The form suppressions are kept and compared in: lower-case.
    pub fn normalized(&self) -> String {
        self.as_str().to_lowercase()
    }

    pub fn domain(&self) -> &str {
        self.0.domain()
    }

    pub fn address(&self) -> &lettre::Address {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked() {
        assert_eq!(
            EmailAddress::parse(" Ada@Example.com ").unwrap().as_str(),
            "Ada@Example.com"
        );
        assert_eq!(
            EmailAddress::parse("Ada@Example.com").unwrap().normalized(),
            "ada@example.com"
        );
        for bad in [
            "",
            "no-at-sign",
            "two@@example.com",
            "a b@example.com",
            "a@exa mple.com",
            "a@example.com\r\nBcc: x@y.z",
            "@example.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?}");
        }
        assert!(EmailAddress::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn mailboxes_may_carry_a_name() {
        let mailbox = EmailAddress::parse_mailbox("Hatchery <no-reply@hatchery.test>").unwrap();
        assert_eq!(mailbox.email.to_string(), "no-reply@hatchery.test");
        assert!(EmailAddress::parse_mailbox("Hatchery").is_err());
    }
}
