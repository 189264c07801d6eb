//! API keys: what a key may do (its [`Role`]), how keys are minted, and how they are
//! checked. Only a SHA-256 of the secret part is stored; keys are random, so a fast
//! hash is enough, and the comparison is constant-time.

use crate::ids::{KeyId, TenantId};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Everything, for every tenant: the API owner's backend.
    Admin,
    /// Claim and finish operations; nothing else.
    Worker,
    /// One tenant's own operations, webhooks and deliveries.
    Tenant(TenantId),
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Worker => "worker",
            Role::Tenant(_) => "tenant",
        }
    }

    pub fn tenant(&self) -> Option<TenantId> {
        match self {
            Role::Tenant(t) => Some(*t),
            _ => None,
        }
    }
}

/// A key as it is handed out once: `hrk_<ulid>_<secret>`. The id part lets Herald find
/// the stored hash without scanning; the secret part is 32 random bytes in hex.
#[derive(Debug, Clone)]
pub struct MintedKey {
    pub id: KeyId,
    pub plaintext: String,
    pub hash: String,
}

pub fn mint_key() -> MintedKey {
    let id = KeyId::generate();
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    let secret = hex::encode(secret);
    let ulid = id.to_string();
    let ulid = ulid.trim_start_matches(KeyId::PREFIX);
    MintedKey {
        id,
        plaintext: format!("hrk_{ulid}_{secret}"),
        hash: hash_secret(&secret),
    }
}

/// Splits a presented key into the id it claims and its secret part.
pub fn split_key(presented: &str) -> Option<(KeyId, &str)> {
    let rest = presented.strip_prefix("hrk_")?;
    let (ulid, secret) = rest.split_once('_')?;
    let id = KeyId::parse(&format!("{}{ulid}", KeyId::PREFIX)).ok()?;
    Some((id, secret))
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `stored_hash`, compared in constant time.
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    hash_secret(secret)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

/// An admin key given in config or env (`HERALD_ADMIN_KEY`) may have any shape;
/// it is matched as a whole, also in constant time.
pub fn static_key_matches(presented: &str, configured: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(configured.as_bytes());
    a.ct_eq(&b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_key_verifies_and_others_do_not() {
        let key = mint_key();
        let (id, secret) = split_key(&key.plaintext).unwrap();
        assert_eq!(id, key.id);
        assert!(secret_matches(secret, &key.hash));
        assert!(!secret_matches("00", &key.hash));
        assert!(split_key("Bearer nonsense").is_none());
        assert!(!key.hash.contains(secret));
    }
}
