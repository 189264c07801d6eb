//! Config values written as text and parsed once, at load, into their types. A field
//! says `deserialize_with = "value::one"` (or `option`, `list`); an invalid value is
//! refused while the file is read, under its key's path (`routes[1].broker: …`).

use herald_core::duration;
use herald_core::pattern::EventPattern;
use herald_store::encrypted::SecretKey;
use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// A type a config value is parsed into from its text.
pub trait FromText: Sized {
    /// The value, or why `text` is not one (without echoing secrets).
    fn from_text(text: &str) -> Result<Self, String>;
}

/// One text value parsed into `T`: what `one`, `option` and `list` deserialise.
struct Parsed<T>(T);

impl<'de, T: FromText> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        T::from_text(&text)
            .map(Parsed)
            .map_err(serde::de::Error::custom)
    }
}

/// `deserialize_with` for a `T`.
pub fn one<'de, D: Deserializer<'de>, T: FromText>(d: D) -> Result<T, D::Error> {
    Parsed::deserialize(d).map(|p| p.0)
}

/// `deserialize_with` for an `Option<T>` (with `#[serde(default)]` for a missing key).
pub fn option<'de, D: Deserializer<'de>, T: FromText>(d: D) -> Result<Option<T>, D::Error> {
    Option::<Parsed<T>>::deserialize(d).map(|p| p.map(|p| p.0))
}

/// `deserialize_with` for a `Vec<T>`: a bad entry is refused under its index (`[2]`).
pub fn list<'de, D: Deserializer<'de>, T: FromText>(d: D) -> Result<Vec<T>, D::Error> {
    Vec::<Parsed<T>>::deserialize(d).map(|v| v.into_iter().map(|p| p.0).collect())
}

impl FromText for Duration {
    fn from_text(text: &str) -> Result<Self, String> {
        duration::parse(text).map_err(|e| e.to_string())
    }
}

impl FromText for EventPattern {
    fn from_text(text: &str) -> Result<Self, String> {
        EventPattern::parse(text).map_err(|e| e.to_string())
    }
}

impl FromText for SecretKey {
    /// The error never shows the key.
    fn from_text(text: &str) -> Result<Self, String> {
        SecretKey::parse(text).map_err(|e| e.to_string())
    }
}

/// A config value that must never be printed (keys): `Debug` shows `<redacted>`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Herald's address as its users reach it: an origin, `http(s)://host[:port]` (no path:
/// Herald's pages link to each other from the root). Kept without a trailing `/`, so links
/// are `{public_url}/portal/…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromText for PublicUrl {
    fn from_text(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("{text:?} is not a URL like \"https://hooks.example.com\" (scheme, host and port only)")
        };
        let url = url::Url::parse(text).map_err(|_| bad())?;
        let plain = matches!(url.scheme(), "http" | "https")
            && url.host_str().is_some()
            && url.username().is_empty()
            && url.password().is_none()
            && url.path() == "/"
            && url.query().is_none()
            && url.fragment().is_none();
        if !plain {
            return Err(bad());
        }
        Ok(Self(url.origin().ascii_serialization()))
    }
}
