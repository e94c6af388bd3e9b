//! The Ed25519 key that signs digest checkpoints and audit bundles, and the
//! canonical texts that are signed.

use anyhow::{Context, bail};
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use rand::RngCore;
use std::path::Path;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410), for PEM output.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

#[derive(Clone)]
pub struct AuditSigner {
    key: SigningKey,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditSigner({})", self.public_key_hex())
    }
}

impl AuditSigner {
    /// From the hex encoding of a 32-byte seed.
    pub fn from_hex(seed: &str) -> anyhow::Result<Self> {
        let bytes = hex::decode(seed.trim()).context("the audit signing key is not hex")?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("the audit signing key must be 32 bytes"))?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// Read the key from `path`, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        if path.exists() {
            return Self::from_hex(&std::fs::read_to_string(path)?);
        }
        let signer = Self::generate();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, hex::encode(signer.key.to_bytes()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(signer)
    }

    /// A secret for another purpose, derived from the signing key (HMAC),
    /// so every replica that shares the signing key shares it too and a
    /// reader of the database alone holds neither.
    pub fn derive_secret(&self, purpose: &str) -> [u8; 32] {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key.to_bytes()).expect("any key length");
        mac.update(b"coverwatch.derived-secret.v1\n");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).to_bytes().to_vec()
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    pub fn public_key_pem(&self) -> String {
        public_key_pem(&self.key.verifying_key().to_bytes())
    }
}

pub fn public_key_pem(key: &[u8; 32]) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(key);
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n")
}

/// Check `signature` over `message` with the hex-encoded public key.
pub fn verify(public_key_hex: &str, message: &[u8], signature: &[u8]) -> anyhow::Result<()> {
    let key: [u8; 32] = hex::decode(public_key_hex)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("a public key is 32 bytes"))?;
    let key = VerifyingKey::from_bytes(&key)?;
    let signature: [u8; 64] = signature
        .try_into()
        .map_err(|_| anyhow::anyhow!("a signature is 64 bytes"))?;
    if key.verify(message, &Signature::from_bytes(&signature)).is_err() {
        bail!("bad signature");
    }
    Ok(())
}

/// The text a digest checkpoint's signature covers.
pub fn checkpoint_message(scope: &str, position: i64, count: i64, digest: &str, recorded_at: &str) -> String {
    format!("coverwatch.digest.v1\n{scope}\n{position}\n{count}\n{digest}\n{recorded_at}\n")
}

/// Extend a running digest by one event: `SHA-256(prev ":" position ":" hash)`.
pub fn extend_digest(previous: &str, position: i64, event_hash: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(previous.as_bytes());
    hasher.update(b":");
    hasher.update(position.to_string().as_bytes());
    hasher.update(b":");
    hasher.update(event_hash.as_bytes());
    hex::encode(hasher.finalize())
}

pub const DIGEST_GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
