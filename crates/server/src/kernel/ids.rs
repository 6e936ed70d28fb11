//! Values validated once, at the edge: a request body that deserializes holds only valid ones.

use serde::{Deserialize, Deserializer};

/// Most characters of a display name (tenants, tokens, keys).
pub const MAX_NAME: usize = 200;

/// A human-readable name: trimmed, not empty, at most [`MAX_NAME`] characters.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Name(String);

impl Name {
    /// Validates a name.
    pub fn parse(s: &str) -> Result<Name, String> {
        let t = s.trim();
        if t.is_empty() || s.chars().count() > MAX_NAME {
            return Err(format!(
                "must be a non-empty string of at most {MAX_NAME} characters"
            ));
        }
        Ok(Name(t.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Name, D::Error> {
        let s = String::deserialize(d)?;
        Name::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `{"name": …}`: a tenant, token or key.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named {
    /// The name.
    pub name: Name,
}

/// An instant given as RFC 3339 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instant(time::OffsetDateTime);

impl Instant {
    /// Parses RFC 3339 text.
    pub fn parse(s: &str) -> Result<Instant, String> {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .map(Instant)
            .map_err(|_| format!("'{s}' is not an RFC 3339 instant"))
    }

    /// The instant.
    pub fn at(self) -> time::OffsetDateTime {
        self.0
    }

    /// The stored form (see [`crate::kernel::clock::stamp`]).
    pub fn stamp(self) -> String {
        crate::kernel::clock::stamp(self.0)
    }
}

impl<'de> Deserialize<'de> for Instant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        let s = String::deserialize(d)?;
        Instant::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::parse("  ops ").unwrap().as_str(), "ops");
        assert!(Name::parse("   ").is_err());
        assert!(Name::parse(&"x".repeat(MAX_NAME + 1)).is_err());
        assert!(serde_json::from_str::<Name>("12").is_err());
        assert!(Instant::parse("2026-01-01T00:00:00Z").is_ok());
        assert!(serde_json::from_str::<Instant>("\"yesterday\"").is_err());
    }
}
