//! Audit bundles: a tenant's events (JSON Lines, with hashes, metadata and the
//! exact stored JSON text), the tenant's signed digest checkpoints in range,
//! and a manifest signed with the audit key, in one tar file that a third
//! party verifies offline — with `coverwatch replay verify --bundle FILE`, or
//! with standard tools:
//!
//! ```text
//! mkdir bundle && tar -xf FILE -C bundle && cd bundle
//! sha256sum -c SHA256SUMS
//! openssl pkeyutl -verify -pubin -inkey public-key.pem -rawin -in manifest.json -sigfile manifest.sig
//! ```
//! (and compare `public-key.pem` with `GET /v1/audit/public-key`).

use crate::hash::HashedEvent;
use crate::verify::{Checkpoint, HASHED_COLUMNS, Report, Verifier};
use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use coverwatch_domain::ids::TenantId;
use coverwatch_projections::digest::{checkpoint_time, tenant_scope};
use coverwatch_projections::signing::{AuditSigner, DIGEST_GENESIS, extend_digest, verify as verify_signature};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use uuid::Uuid;

pub const FORMAT: &str = "coverwatch.audit-bundle.v1";

/// One event as exported: payload and metadata are the stored JSON text, so
/// hashes can be recomputed byte for byte.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleEvent {
    pub position: i64,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub recorded_at: String,
    pub tenant_id: Option<TenantId>,
    pub payload: String,
    pub metadata: String,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleCheckpoint {
    pub scope: String,
    pub position: i64,
    pub count: i64,
    pub digest: String,
    pub recorded_at: String,
    pub public_key: String,
    pub signature: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DigestAnchor {
    pub count: i64,
    pub digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub tenant_id: TenantId,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub events: u64,
    pub first_position: Option<i64>,
    pub last_position: Option<i64>,
    /// The tenant's running digest just before the first exported event.
    pub digest_before: DigestAnchor,
    pub public_key: String,
    /// SHA-256 of each data file.
    pub files: BTreeMap<String, String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn to_bundle(event: HashedEvent) -> BundleEvent {
    BundleEvent {
        position: event.position,
        event_id: event.event_id,
        aggregate_type: event.aggregate_type,
        aggregate_id: event.aggregate_id,
        sequence: event.sequence,
        event_type: event.event_type,
        event_version: event.event_version,
        recorded_at: checkpoint_time(event.recorded_at),
        tenant_id: event.tenant_id,
        payload: event.payload,
        metadata: event.metadata,
        prev_hash: event.prev_hash,
        hash: event.hash,
    }
}

fn from_bundle(event: BundleEvent) -> anyhow::Result<HashedEvent> {
    Ok(HashedEvent {
        position: event.position,
        event_id: event.event_id,
        aggregate_type: event.aggregate_type,
        aggregate_id: event.aggregate_id,
        sequence: event.sequence,
        event_type: event.event_type,
        event_version: event.event_version,
        recorded_at: event.recorded_at.parse().context("recorded_at")?,
        tenant_id: event.tenant_id,
        payload: event.payload,
        metadata: event.metadata,
        prev_hash: event.prev_hash,
        hash: event.hash,
    })
}

fn jsonl<T: Serialize>(items: &[T]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for item in items {
        serde_json::to_writer(&mut out, item)?;
        out.push(b'\n');
    }
    Ok(out)
}

const README: &str = "Coverwatch audit bundle.\n\
Verify offline:\n\
  sha256sum -c SHA256SUMS\n\
  openssl pkeyutl -verify -pubin -inkey public-key.pem -rawin -in manifest.json -sigfile manifest.sig\n\
and compare public-key.pem with the key Coverwatch publishes (GET /v1/audit/public-key).\n\
`coverwatch replay verify --bundle FILE` also recomputes every event hash, the hash chains\n\
and the tenant's running digest against the signed checkpoints in checkpoints.jsonl.\n";

/// Write the tenant's audit bundle for `[from, to)` to `out`.
pub async fn export(
    pool: &PgPool,
    signer: &AuditSigner,
    tenant: TenantId,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    out: &Path,
) -> anyhow::Result<Manifest> {
    let events: Vec<HashedEvent> = sqlx::query_as(&format!(
        "SELECT {HASHED_COLUMNS} FROM events
          WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR recorded_at >= $2)
            AND ($3::timestamptz IS NULL OR recorded_at < $3)
          ORDER BY position"
    ))
    .bind(tenant)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    let first = events.first().map(|e| e.position);
    let last = events.last().map(|e| e.position);
    // The running digest before the range, from the tenant's earlier events.
    let earlier: Vec<(i64, String)> =
        sqlx::query_as("SELECT position, hash FROM events WHERE tenant_id = $1 AND position < $2 ORDER BY position")
            .bind(tenant)
            .bind(first.unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await?;
    let mut digest_before = DigestAnchor {
        count: 0,
        digest: DIGEST_GENESIS.to_owned(),
    };
    for (position, hash) in &earlier {
        digest_before.count += 1;
        digest_before.digest = extend_digest(&digest_before.digest, *position, hash);
    }
    let checkpoints: Vec<Checkpoint> = sqlx::query_as(
        "SELECT scope, position, count, digest, recorded_at, public_key, signature FROM digest_checkpoints
          WHERE scope = $1 AND position BETWEEN $2 AND $3 ORDER BY position",
    )
    .bind(tenant_scope(tenant))
    .bind(first.unwrap_or(0))
    .bind(last.unwrap_or(-1))
    .fetch_all(pool)
    .await?;
    let checkpoints: Vec<BundleCheckpoint> = checkpoints
        .into_iter()
        .map(|c| BundleCheckpoint {
            scope: c.scope,
            position: c.position,
            count: c.count,
            digest: c.digest,
            recorded_at: checkpoint_time(c.recorded_at),
            public_key: c.public_key,
            signature: c.signature,
        })
        .collect();
    let count = events.len() as u64;
    let events_file = jsonl(&events.into_iter().map(to_bundle).collect::<Vec<_>>())?;
    let checkpoints_file = jsonl(&checkpoints)?;
    let manifest = Manifest {
        format: FORMAT.into(),
        tenant_id: tenant,
        from,
        to,
        created_at: Utc::now(),
        events: count,
        first_position: first,
        last_position: last,
        digest_before,
        public_key: signer.public_key_hex(),
        files: BTreeMap::from([
            ("events.jsonl".to_owned(), sha256_hex(&events_file)),
            ("checkpoints.jsonl".to_owned(), sha256_hex(&checkpoints_file)),
        ]),
    };
    let manifest_file = serde_json::to_vec_pretty(&manifest)?;
    let signature = signer.sign(&manifest_file);
    let sums = format!(
        "{}  events.jsonl\n{}  checkpoints.jsonl\n{}  manifest.json\n",
        sha256_hex(&events_file),
        sha256_hex(&checkpoints_file),
        sha256_hex(&manifest_file)
    );
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut tar = tar::Builder::new(file);
    for (name, bytes) in [
        ("events.jsonl", events_file.as_slice()),
        ("checkpoints.jsonl", checkpoints_file.as_slice()),
        ("manifest.json", manifest_file.as_slice()),
        ("manifest.sig", signature.as_slice()),
        ("public-key.pem", signer.public_key_pem().as_bytes()),
        ("SHA256SUMS", sums.as_bytes()),
        ("README.txt", README.as_bytes()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(manifest.created_at.timestamp().max(0) as u64);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes)?;
    }
    tar.into_inner()?.sync_all()?;
    Ok(manifest)
}

/// Verify a bundle offline. `public_key`: the key Coverwatch publishes (hex);
/// without it the bundle's own key is used, which proves integrity but not origin.
pub fn verify_bundle(path: &Path, public_key: Option<&str>) -> anyhow::Result<Report> {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut archive =
        tar::Archive::new(std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let mut bytes = vec![];
        entry.read_to_end(&mut bytes)?;
        files.insert(name, bytes);
    }
    let file = |name: &str| files.get(name).with_context(|| format!("the bundle has no {name}"));
    let manifest_bytes = file("manifest.json")?;
    let manifest: Manifest = serde_json::from_slice(manifest_bytes).context("manifest.json")?;
    if manifest.format != FORMAT {
        bail!("unknown bundle format {}", manifest.format);
    }
    let key = public_key.unwrap_or(&manifest.public_key).to_owned();
    if key != manifest.public_key {
        bail!(
            "the bundle is signed with {}, not the published key {key}",
            manifest.public_key
        );
    }
    verify_signature(&key, manifest_bytes, file("manifest.sig")?)
        .context("the manifest's signature does not verify")?;
    for (name, expected) in &manifest.files {
        let actual = sha256_hex(file(name)?);
        if &actual != expected {
            bail!("{name} was modified: SHA-256 {actual}, manifest says {expected}");
        }
    }
    let parse_lines = |bytes: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(bytes)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let checkpoints = parse_lines(file("checkpoints.jsonl")?)
        .iter()
        .map(|line| {
            let c: BundleCheckpoint = serde_json::from_str(line)?;
            Ok(Checkpoint {
                scope: c.scope,
                position: c.position,
                count: c.count,
                digest: c.digest,
                recorded_at: c.recorded_at.parse()?,
                public_key: c.public_key,
                signature: c.signature,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let start = HashMap::from([(
        tenant_scope(manifest.tenant_id),
        (manifest.digest_before.count, manifest.digest_before.digest.clone()),
    )]);
    let mut verifier = Verifier::new(Some(key), checkpoints, start);
    if manifest.digest_before.count > 0 {
        verifier = verifier.partial();
    }
    let mut count = 0u64;
    for line in parse_lines(file("events.jsonl")?) {
        let event = from_bundle(serde_json::from_str(&line).context("events.jsonl")?)?;
        if event.tenant_id != Some(manifest.tenant_id) {
            bail!("event {} belongs to another tenant", event.event_id);
        }
        verifier.event(&event);
        count += 1;
    }
    if count != manifest.events {
        bail!("the bundle holds {count} events, the manifest says {}", manifest.events);
    }
    Ok(verifier.finish())
}
