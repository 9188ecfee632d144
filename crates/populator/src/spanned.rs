//! A deserialized value together with the line it was written on.

use serde::{Deserialize, Deserializer};

/// A value from a seed file together with the line it was written on.
///
/// Use it for fields that later checks must point at, typically the natural key (`id`) and
/// references to other entities, then hand [`line`](Self::line) to [`Source::error_at`] or
/// [`Keys`]:
///
/// ```
/// # use populator::Spanned;
/// #[derive(serde::Deserialize)]
/// struct Note {
///     id: Spanned<uuid::Uuid>,
///     owner: Spanned<uuid::Uuid>,
/// }
/// ```
///
/// The line is where the value is used: for a YAML alias (`*name`) that is the alias, not
/// the anchor. It is `0` ("unknown") when serde buffered the value before this type saw it,
/// which happens inside `#[serde(flatten)]` structs and untagged or internally tagged enums;
/// errors reported at line `0` are shown without a line.
///
/// [`Source::error_at`]: crate::Source::error_at
/// [`Keys`]: crate::Keys
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Spanned<T> {
    /// The value itself.
    pub value: T,
    line: usize,
}

impl<T> Spanned<T> {
    /// Wraps `value` as if it had been read at `line` (1-based; `0` = unknown).
    pub const fn new(value: T, line: usize) -> Self {
        Self { value, line }
    }

    /// The 1-based line the value was written on, or `0` if unknown.
    pub const fn line(&self) -> usize {
        self.line
    }

    /// Drops the line.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(deserializer)?;
        let line = match spanned.referenced.line() {
            0 => spanned.defined.line(),
            line => line,
        };
        Ok(Self {
            value: spanned.value,
            line: usize::try_from(line).unwrap_or(0),
        })
    }
}
