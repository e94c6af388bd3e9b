//! AWS Organizations discovery: assumes the organization's role (STS, with
//! the tenant's external id) and walks the hierarchy from the root, OUs and
//! accounts per parent, pages of at most 20, independent subtrees in parallel.
//! Throttling is retried by the SDK's standard retry mode (exponential
//! backoff with jitter); a subtree that cannot be read is reported, not fatal.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_organizations::Client;
use coverwatch_domain::cloud::hierarchy::{DiscoveredAccount, DiscoveredHierarchy, DiscoveredOu};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Where the SDK goes and with which base credentials.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// `AWS_ENDPOINT_URL`-style override (tests point it at moto).
    pub endpoint_url: Option<String>,
    pub region: String,
    /// Static base credentials; without them the SDK's default chain.
    pub access_key: Option<(String, String)>,
}

/// What a run has done so far (read by the progress endpoint).
#[derive(Debug, Default)]
pub struct DiscoveryProgress {
    pub pages: AtomicU64,
    pub ous: AtomicU64,
    pub accounts: AtomicU64,
    pub errors: Mutex<Vec<String>>,
}

/// Subtrees read at once: AWS allows a few requests a second per account.
const PARALLEL_PARENTS: usize = 4;
const PAGE_SIZE: i32 = 20;

#[derive(Clone)]
pub struct Discovery {
    base: aws_config::SdkConfig,
}

impl Discovery {
    pub async fn new(settings: &AwsSettings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(aws_config::Region::new(settings.region.clone()))
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(8)
                    .with_initial_backoff(Duration::from_millis(200)),
            );
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some((id, secret)) = &settings.access_key {
            loader = loader.credentials_provider(aws_sdk_organizations::config::Credentials::new(
                id,
                secret,
                None,
                None,
                "coverwatch-settings",
            ));
        }
        Self {
            base: loader.load().await,
        }
    }

    /// An Organizations client acting through the organization's role.
    pub async fn client(&self, role_arn: &str, external_id: &str) -> Client {
        let role = aws_config::sts::AssumeRoleProvider::builder(role_arn)
            .external_id(external_id)
            .session_name("coverwatch-discovery")
            .configure(&self.base)
            .build()
            .await;
        let config = aws_sdk_organizations::config::Builder::from(&self.base)
            .credentials_provider(role)
            .build();
        Client::from_conf(config)
    }

    /// Whether the audit role in a member account can be assumed (STS
    /// AssumeRole with the tenant's external id); the AWS error otherwise.
    pub async fn verify_role(&self, role_arn: &str, external_id: &str) -> Result<(), String> {
        let sts = aws_sdk_sts::Client::new(&self.base);
        sts.assume_role()
            .role_arn(role_arn)
            .external_id(external_id)
            .role_session_name("coverwatch-connect")
            .duration_seconds(900)
            .send()
            .await
            .map(drop)
            .map_err(|error| {
                use aws_sdk_sts::error::ProvideErrorMetadata;
                match error.as_service_error() {
                    Some(service) => format!(
                        "{}: {}",
                        service.code().unwrap_or("Error"),
                        service.message().unwrap_or_default()
                    ),
                    None => error.to_string(),
                }
            })
    }

    /// Walks the whole hierarchy; errors name the subtree they cost.
    pub async fn hierarchy(&self, client: &Client, progress: Arc<DiscoveryProgress>) -> DiscoveredHierarchy {
        let roots = match client.list_roots().send().await {
            Ok(roots) => roots,
            Err(error) => {
                progress
                    .errors
                    .lock()
                    .expect("errors lock")
                    .push(format!("Root: {}", describe(&error)));
                return DiscoveredHierarchy::default();
            }
        };
        progress.pages.fetch_add(1, Ordering::Relaxed);
        let Some(root_id) = roots.roots().first().and_then(|r| r.id()).map(str::to_owned) else {
            return DiscoveredHierarchy::default();
        };
        let permits = Arc::new(Semaphore::new(PARALLEL_PARENTS));
        let mut hierarchy = DiscoveredHierarchy {
            root_id: root_id.clone(),
            ..DiscoveredHierarchy::default()
        };
        // Breadth first: every level's parents are read in parallel.
        let mut level = vec![(root_id.clone(), vec!["Root".to_owned()], vec![root_id])];
        while !level.is_empty() {
            let mut tasks = tokio::task::JoinSet::new();
            for (parent_id, names, ids) in level.drain(..) {
                let (client, permits, progress) = (client.clone(), permits.clone(), progress.clone());
                tasks.spawn(async move {
                    let _permit = permits.acquire_owned().await.expect("semaphore open");
                    read_parent(&client, &progress, parent_id, names, ids).await
                });
            }
            while let Some(done) = tasks.join_next().await {
                let Ok((ous, accounts)) = done else { continue };
                for ou in &ous {
                    level.push((ou.id.clone(), ou.path_names.clone(), ou.path_ids.clone()));
                }
                hierarchy.ous.extend(ous);
                hierarchy.accounts.extend(accounts);
            }
        }
        hierarchy.ous.sort_by(|a, b| a.path_names.cmp(&b.path_names));
        hierarchy.accounts.sort_by(|a, b| a.id.cmp(&b.id));
        hierarchy
    }
}

fn describe<E, R>(error: &aws_sdk_organizations::error::SdkError<E, R>) -> String
where
    E: aws_sdk_organizations::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match error.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("Error"),
            service.message().unwrap_or_default()
        ),
        None => format!("{error}"),
    }
}

/// The OUs and accounts directly under one parent (all pages).
async fn read_parent(
    client: &Client,
    progress: &DiscoveryProgress,
    parent_id: String,
    names: Vec<String>,
    ids: Vec<String>,
) -> (Vec<DiscoveredOu>, Vec<DiscoveredAccount>) {
    let path = names.join("/");
    let fail = |what: &str, error: String| {
        progress
            .errors
            .lock()
            .expect("errors lock")
            .push(format!("{path}: {what}: {error}"));
    };
    let mut ous = vec![];
    let mut token = None;
    loop {
        let page = client
            .list_organizational_units_for_parent()
            .parent_id(&parent_id)
            .max_results(PAGE_SIZE)
            .set_next_token(token.take())
            .send()
            .await;
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                fail("ListOrganizationalUnitsForParent", describe(&error));
                return (vec![], vec![]);
            }
        };
        progress.pages.fetch_add(1, Ordering::Relaxed);
        for unit in page.organizational_units() {
            let (Some(id), Some(name)) = (unit.id(), unit.name()) else {
                continue;
            };
            let mut path_names = names.clone();
            path_names.push(name.to_owned());
            let mut path_ids = ids.clone();
            path_ids.push(id.to_owned());
            ous.push(DiscoveredOu {
                id: id.to_owned(),
                name: name.to_owned(),
                parent_id: parent_id.clone(),
                path_names,
                path_ids,
            });
        }
        progress
            .ous
            .fetch_add(page.organizational_units().len() as u64, Ordering::Relaxed);
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    let mut accounts = vec![];
    loop {
        let page = client
            .list_accounts_for_parent()
            .parent_id(&parent_id)
            .max_results(PAGE_SIZE)
            .set_next_token(token.take())
            .send()
            .await;
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                fail("ListAccountsForParent", describe(&error));
                return (ous, accounts);
            }
        };
        progress.pages.fetch_add(1, Ordering::Relaxed);
        for account in page.accounts() {
            let Some(id) = account.id() else { continue };
            accounts.push(DiscoveredAccount {
                id: id.to_owned(),
                name: account.name().unwrap_or_default().to_owned(),
                email: account.email().unwrap_or_default().to_owned(),
                status: account
                    .status()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_else(|| "UNKNOWN".into()),
                parent_id: parent_id.clone(),
                path_names: names.clone(),
                path_ids: ids.clone(),
            });
        }
        progress
            .accounts
            .fetch_add(page.accounts().len() as u64, Ordering::Relaxed);
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    (ous, accounts)
}
