//! AWS discovery: assumes the organization's role (STS, with the tenant's
//! external id) and reads the organization with the AWS SDK: the hierarchy
//! (`hierarchy`), delegated administrators, SCPs and organization-level
//! sources (`sources`). Calls are paced per operation within AWS's published
//! rates (`throttle`); throttling that still happens is retried by the SDK's
//! standard retry mode (exponential backoff with jitter). A part that cannot
//! be read is reported, not fatal. Account scans (`scan`) read what is
//! deployed in each member account the same way.

mod hierarchy;
pub mod scan;
mod sources;
pub mod throttle;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use coverwatch_domain::cloud::sources::{Discovered, SourceKind};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use throttle::Throttle;

/// AWS Organizations' documented request rate per account for its list
/// operations (ListAccounts: 8 requests/s); used for every paced operation.
pub const AWS_REQUESTS_PER_SECOND: f64 = 8.0;

/// Where the SDK goes and with which base credentials.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// `AWS_ENDPOINT_URL`-style override (tests point it at moto).
    pub endpoint_url: Option<String>,
    pub region: String,
    /// Static base credentials; without them the SDK's default chain.
    pub access_key: Option<(String, String)>,
    /// Requests per second per operation; 0 turns pacing off.
    pub requests_per_second: f64,
}

impl Default for AwsSettings {
    fn default() -> Self {
        Self {
            endpoint_url: None,
            region: "us-east-1".into(),
            access_key: None,
            requests_per_second: AWS_REQUESTS_PER_SECOND,
        }
    }
}

/// What a run has done so far (read by the progress endpoint).
#[derive(Debug, Default)]
pub struct DiscoveryProgress {
    pub pages: AtomicU64,
    pub ous: AtomicU64,
    pub accounts: AtomicU64,
    pub errors: Mutex<Vec<String>>,
}

impl DiscoveryProgress {
    fn page(&self) {
        self.pages.fetch_add(1, Ordering::Relaxed);
    }

    fn error(&self, error: String) {
        self.errors.lock().expect("errors lock").push(error);
    }

    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().expect("errors lock").clone()
    }
}

/// AWS caps Organizations' list pages at 20.
const PAGE_SIZE: i32 = 20;

#[derive(Clone)]
pub struct Discovery {
    base: aws_config::SdkConfig,
    requests_per_second: f64,
}

/// The clients one run uses, sharing the assumed role's credentials.
pub struct Clients {
    organizations: aws_sdk_organizations::Client,
    cloudtrail: aws_sdk_cloudtrail::Client,
    config: aws_sdk_config::Client,
}

/// A finished run: what it found, its errors and the calls it made.
pub struct Run {
    pub found: Discovered,
    pub errors: Vec<String>,
    pub calls: BTreeMap<&'static str, u64>,
}

/// The SDK configuration every client starts from: region, endpoint, base
/// credentials, and the standard retry mode (exponential backoff with
/// jitter, 8 attempts) for throttling that pacing did not avoid.
pub async fn base_config(settings: &AwsSettings) -> aws_config::SdkConfig {
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
    loader.load().await
}

impl Discovery {
    pub async fn new(settings: &AwsSettings) -> Self {
        Self {
            base: base_config(settings).await,
            requests_per_second: settings.requests_per_second,
        }
    }

    /// Clients acting through the organization's role (one AssumeRole,
    /// refreshed by the provider as the session nears its end).
    pub async fn clients(&self, role_arn: &str, external_id: &str) -> Clients {
        let role = aws_config::sts::AssumeRoleProvider::builder(role_arn)
            .external_id(external_id)
            .session_name("coverwatch-discovery")
            .configure(&self.base)
            .build()
            .await;
        let config = self
            .base
            .to_builder()
            .credentials_provider(aws_sdk_organizations::config::SharedCredentialsProvider::new(role))
            .build();
        Clients {
            organizations: aws_sdk_organizations::Client::new(&config),
            cloudtrail: aws_sdk_cloudtrail::Client::new(&config),
            config: aws_sdk_config::Client::new(&config),
        }
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
            .map_err(|error| describe(&error))
    }

    /// Reads the whole organization: the hierarchy and, beside it, the
    /// delegated administrators, SCPs, trails and aggregators.
    /// The role must belong to `organization_id` (DescribeOrganization);
    /// otherwise nothing else is read and the run is an error.
    pub async fn discover(&self, clients: &Clients, organization_id: &str, progress: Arc<DiscoveryProgress>) -> Run {
        let throttle = Arc::new(Throttle::new(self.requests_per_second));
        let org = &clients.organizations;
        throttle.wait("DescribeOrganization").await;
        let described = org.describe_organization().send().await;
        progress.page();
        let actual = match &described {
            Ok(described) => described.organization().and_then(|o| o.id()).map(str::to_owned),
            Err(error) => {
                progress.error(format!("DescribeOrganization: {}", describe(error)));
                None
            }
        };
        if actual.as_deref() != Some(organization_id) {
            if let Some(actual) = actual {
                progress.error(format!(
                    "the role belongs to organization {actual}, not {organization_id}"
                ));
            }
            return Run {
                found: Discovered {
                    unread_source_kinds: SourceKind::ALL.into_iter().collect(),
                    ..Discovered::default()
                },
                errors: progress.errors(),
                calls: throttle.calls(),
            };
        }
        let (hierarchy, admins, policies, trails, aggregators) = tokio::join!(
            hierarchy::walk(org, &throttle, &progress),
            sources::delegated_administrators(org, &throttle, &progress),
            sources::service_control_policies(org, &throttle, &progress),
            sources::organization_trails(&clients.cloudtrail, &throttle, &progress),
            sources::config_aggregators(&clients.config, &throttle, &progress),
        );
        let mut found = Discovered {
            hierarchy,
            ..Discovered::default()
        };
        match &admins {
            Some(admins) => found.sources.extend(sources::administrator_sources(admins)),
            None => {
                found.unread_source_kinds.insert(SourceKind::Guardduty);
                found.unread_source_kinds.insert(SourceKind::SecurityHub);
            }
        }
        for (kind, read) in [
            (SourceKind::CloudtrailOrganizationTrail, trails),
            (SourceKind::ConfigAggregator, aggregators),
        ] {
            match read {
                Some(read) => found.sources.extend(read),
                None => {
                    found.unread_source_kinds.insert(kind);
                }
            }
        }
        found.sources.sort_by(|a, b| a.id.cmp(&b.id));
        found.delegated_administrators = admins;
        found.policies = policies;
        Run {
            found,
            errors: progress.errors(),
            calls: throttle.calls(),
        }
    }
}

/// Reads every page of one paginated call, each in its paced slot: `call`
/// sends the request for a page token, `each` takes the page and returns
/// the next token. The first error ends it as `Operation: Code: message`.
async fn each_page<T, E, R, Fut>(
    throttle: &Throttle,
    progress: &DiscoveryProgress,
    operation: &'static str,
    mut call: impl FnMut(Option<String>) -> Fut,
    mut each: impl FnMut(T) -> Option<String>,
) -> Result<(), String>
where
    Fut: std::future::Future<Output = Result<T, aws_sdk_organizations::error::SdkError<E, R>>>,
    E: aws_sdk_organizations::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let mut token = None;
    loop {
        throttle.wait(operation).await;
        let page = call(token.take())
            .await
            .map_err(|error| format!("{operation}: {}", describe(&error)))?;
        progress.page();
        token = each(page);
        if token.is_none() {
            return Ok(());
        }
    }
}

/// `Code: message` of an AWS error, or the transport error.
pub(crate) fn describe<E, R>(error: &aws_sdk_organizations::error::SdkError<E, R>) -> String
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
