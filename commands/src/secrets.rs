//! API keys and invitation tokens: random, shown once, stored only as SHA-256.
//!
//! An API key reads `cwk_<key id>_<secret>`: the id makes the key findable
//! without scanning, the prefix makes it recognizable to secret scanners.
//! An invitation token reads `cwi_<tenant id>_<invitation id>_<secret>`, so
//! accepting it needs no lookup outside the tenant's own aggregate.

use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const API_KEY_PREFIX: &str = "cwk_";
pub const INVITATION_PREFIX: &str = "cwi_";

/// A generated secret and the hash that is stored in its place.
#[derive(Debug, Clone)]
pub struct Generated {
    pub plaintext: String,
    pub hash: String,
}

pub fn sha256_hex(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

/// A new secret: random, or under an idempotency key the one the first
/// attempt created (so a retry answers with the same key).
fn random_hex() -> String {
    hex::encode(crate::idempotency::fresh_secret())
}

pub fn new_api_key(key_id: Uuid) -> Generated {
    let plaintext = format!("{API_KEY_PREFIX}{}_{}", key_id.simple(), random_hex());
    Generated {
        hash: sha256_hex(&plaintext),
        plaintext,
    }
}

/// The short, non-secret prefix shown in key listings.
pub fn api_key_display_prefix(key_id: Uuid) -> String {
    format!("{API_KEY_PREFIX}{}", &key_id.simple().to_string()[..8])
}

/// The key id inside an API key, if the key is well-formed.
pub fn parse_api_key(key: &str) -> Option<Uuid> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Uuid::try_parse(id).ok()
}

pub fn new_invitation_token(tenant_id: Uuid, invitation_id: Uuid) -> Generated {
    let plaintext = format!(
        "{INVITATION_PREFIX}{}_{}_{}",
        tenant_id.simple(),
        invitation_id.simple(),
        random_hex()
    );
    Generated {
        hash: sha256_hex(&plaintext),
        plaintext,
    }
}

/// Tenant and invitation ids inside an invitation token, if well-formed.
pub fn parse_invitation_token(token: &str) -> Option<(Uuid, Uuid)> {
    let mut parts = token.strip_prefix(INVITATION_PREFIX)?.split('_');
    let tenant = Uuid::try_parse(parts.next()?).ok()?;
    let invitation = Uuid::try_parse(parts.next()?).ok()?;
    let secret = parts.next()?;
    if parts.next().is_some() || secret.len() != 64 {
        return None;
    }
    Some((tenant, invitation))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_round_trip_and_hash() {
        let id = Uuid::now_v7();
        let key = new_api_key(id);
        assert_eq!(parse_api_key(&key.plaintext), Some(id));
        assert_eq!(key.hash, sha256_hex(&key.plaintext));
        assert_ne!(new_api_key(id).plaintext, key.plaintext);
        assert_eq!(parse_api_key("cwk_nope"), None);
    }

    #[test]
    fn invitation_tokens_name_their_tenant_and_invitation() {
        let (t, i) = (Uuid::now_v7(), Uuid::now_v7());
        let token = new_invitation_token(t, i);
        assert_eq!(parse_invitation_token(&token.plaintext), Some((t, i)));
        assert_eq!(parse_invitation_token(&format!("{}x", token.plaintext)), None);
    }
}
