//! Users: email addresses, passwords, display names, roles; and service-client scopes.

use std::collections::BTreeSet;
use std::fmt;

/// An email address, normalised: trimmed and lower-cased, so `Ada@Hatchery.test ` and
/// `ada@hatchery.test` are one account.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Longest address accepted (RFC 5321's path limit).
    pub const MAX_LEN: usize = 254;

    pub fn parse(text: &str) -> Result<Email, &'static str> {
        let email = text.trim().to_lowercase();
        if email.is_empty() {
            return Err("is required");
        }
        if email.len() > Self::MAX_LEN {
            return Err("is too long (at most 254 characters)");
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err("is not an email address");
        };
        let bad_char = |c: char| c.is_whitespace() || c.is_control() || c == '@';
        if local.is_empty()
            || domain.is_empty()
            || local.chars().any(|c| c.is_whitespace() || c.is_control())
            || domain.chars().any(bad_char)
            || domain.starts_with('.')
            || domain.ends_with('.')
        {
            return Err("is not an email address");
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A new password: 8 to 1024 characters. Never shown in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub const MIN_CHARS: usize = 8;
    /// Long enough for passphrases and password managers, short enough that hashing one
    /// cannot be used to burn CPU.
    pub const MAX_CHARS: usize = 1024;

    pub fn parse(text: String) -> Result<Password, String> {
        let chars = text.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(format!("must be at least {} characters", Self::MIN_CHARS));
        }
        if chars > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        Ok(Password(text))
    }

    /// A password as presented for checking (login, current password): any length up to the
    /// maximum, since the rules may have changed since it was set.
    pub fn presented(text: String) -> Option<Password> {
        (text.chars().count() <= Self::MAX_CHARS).then_some(Password(text))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A person's display name: 1 to 100 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(text: &str) -> Result<DisplayName, String> {
        let name = text.trim();
        if name.is_empty() {
            return Err("must not be empty".into());
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        if name.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(DisplayName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A user role: lower-case letters, digits, `_` and `-`, starting with a letter, at most 32
/// characters. `service` is reserved for service tokens and never given to a user.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Role(String);

impl Role {
    pub fn parse(text: &str) -> Result<Role, String> {
        let ok = text.len() <= 32
            && text.starts_with(|c: char| c.is_ascii_lowercase())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !ok {
            return Err(format!(
                "{text:?} is not a role (lower-case letters, digits, `_`, `-`; at most 32)"
            ));
        }
        if text == identity::SERVICE_ROLE {
            return Err("`service` is reserved for service tokens".into());
        }
        Ok(Role(text.to_owned()))
    }
}

/// A user's roles: a set, stored and shown sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roles(BTreeSet<Role>);

impl Roles {
    /// At most this many roles per user.
    pub const MAX: usize = 20;

    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Roles, String> {
        if items.len() > Self::MAX {
            return Err(format!("at most {} roles", Self::MAX));
        }
        items
            .iter()
            .map(|r| Role::parse(r.as_ref()))
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Roles)
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().map(|r| r.0.clone()).collect()
    }
}

/// OAuth scopes of a service client: tokens of letters, digits and `:._-`, at most 64
/// characters each; stored sorted, without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Scopes, String> {
        let mut set = BTreeSet::new();
        for item in items {
            let scope = item.as_ref();
            let ok = !scope.is_empty()
                && scope.len() <= 64
                && scope
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'.' | b'_' | b'-'));
            if !ok {
                return Err(format!("{scope:?} is not a scope"));
            }
            set.insert(scope.to_owned());
        }
        Ok(Scopes(set))
    }

    /// The OAuth `scope` parameter: space-separated.
    pub fn parse_space_separated(text: &str) -> Result<Scopes, String> {
        let items: Vec<&str> = text.split_ascii_whitespace().collect();
        Scopes::parse(&items)
    }

    pub fn is_subset(&self, of: &Scopes) -> bool {
        self.0.is_subset(&of.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }

    /// Space-separated, as in a token's `scope` claim.
    pub fn joined(&self) -> String {
        self.to_vec().join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("  Ada@Hatchery.TEST ").unwrap().as_str(),
            "ada@hatchery.test"
        );
        for bad in [
            "",
            "ada",
            "@x.test",
            "ada@",
            "a b@x.test",
            "ada@x .test",
            "ada@.test",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@x.test", "a".repeat(250))).is_err());
    }

    #[test]
    fn passwords_have_length_bounds_and_stay_hidden() {
        assert!(Password::parse("short".into()).is_err());
        assert!(Password::parse("x".repeat(1025)).is_err());
        let ok = Password::parse("hatchery-ada".into()).unwrap();
        assert!(!format!("{ok:?}").contains("hatchery"));
        // Eight characters, not eight bytes.
        assert!(Password::parse("ééééééé".into()).is_err());
        assert!(Password::parse("éééééééé".into()).is_ok());
    }

    #[test]
    fn roles_are_a_sorted_set_without_service() {
        let roles = Roles::parse(&["editor", "admin", "admin"]).unwrap();
        assert_eq!(roles.to_vec(), ["admin", "editor"]);
        assert!(Roles::parse(&["service"]).is_err());
        assert!(Roles::parse(&["Admin"]).is_err());
        assert!(Roles::parse(&["x y"]).is_err());
    }

    #[test]
    fn scopes_parse_from_space_separated_text() {
        let granted = Scopes::parse(&["payments:read", "payments:write"]).unwrap();
        let asked = Scopes::parse_space_separated(" payments:read ").unwrap();
        assert!(asked.is_subset(&granted));
        assert!(Scopes::parse_space_separated("a\"b").is_err());
        assert_eq!(granted.joined(), "payments:read payments:write");
    }
}
