//! Scanning one connected account: assume its read-only role (STS, with the
//! tenant's external id), find the regions in scope (the account's enabled
//! regions, `account:ListRegions`, narrowed by the tenant), then read every
//! service in every region: GuardDuty, Security Hub, AWS Config, CloudWatch
//! (Logs metric filters with the alarms on their metrics), EventBridge,
//! CloudTrail, IAM Access Analyzer, Inspector and Macie.
//!
//! Regions are read concurrently, the services of a region one after the
//! other; each call waits for its slot at AWS's documented rate for the
//! operation in that account and region (`throttle`), and throttling that
//! still happens is retried by the SDK's standard retry mode. A service
//! that cannot be read in a region is an error of that service and region
//! (naming the IAM action when a permission is missing): the rest of the
//! scan goes on, and what the service held before is kept. The calls are
//! named by their IAM actions: the role templates grant exactly these
//! (`coverwatch_domain::cloud::role_template::SCAN_ACTIONS`).

mod detectors;
mod logging;
mod monitors;

use super::throttle::Throttle;
use super::{AwsSettings, base_config, describe};
use aws_config::SdkConfig;
use coverwatch_domain::cloud::values::{AwsAccountId, Region};
use coverwatch_domain::scan::{Observation, Service, known_region};
use std::collections::{BTreeMap, BTreeSet};

/// AWS's documented request rates where an operation has its own (Security
/// Hub: the SDK's service documentation); every other operation is paced at
/// the scanner's default rate per account and region.
const RATES: [(&str, f64); 3] = [
    ("securityhub:DescribeStandardsControls", 10.0),
    ("securityhub:GetEnabledStandards", 10.0),
    ("securityhub:DescribeHub", 10.0),
];

/// The account to scan and how to reach it.
#[derive(Debug, Clone)]
pub struct ScanTarget {
    pub account_id: AwsAccountId,
    pub role_arn: String,
    pub external_id: String,
    /// Where the account was connected from: the fallback region when its
    /// enabled regions cannot be listed.
    pub home_region: Region,
    /// The tenant's narrowing (None: every enabled region).
    pub regions: Option<BTreeSet<Region>>,
}

/// A call that failed: which service, region and IAM action, and AWS's
/// answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScanError {
    /// A service of the scan, or `sts` / `account` for the account itself.
    pub service: String,
    pub region: Option<String>,
    pub action: String,
    pub message: String,
    /// The role lacks `action` (AccessDenied and its kin).
    pub missing_permission: bool,
}

impl ScanError {
    fn new<E, R>(
        service: &str,
        region: Option<&Region>,
        action: &'static str,
        error: &aws_sdk_sts::error::SdkError<E, R>,
    ) -> Self
    where
        E: aws_sdk_sts::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let code = error.as_service_error().and_then(|e| e.code()).unwrap_or_default();
        let missing_permission = matches!(
            code,
            "AccessDenied"
                | "AccessDeniedException"
                | "UnauthorizedOperation"
                | "AuthorizationError"
                | "UnauthorizedAccess"
        );
        Self {
            service: service.to_owned(),
            region: region.map(|r| r.as_str().to_owned()),
            action: action.to_owned(),
            message: describe(error),
            missing_permission,
        }
    }

    /// `guardduty in eu-west-3: AccessDeniedException: ... (the role lacks guardduty:GetDetector)`.
    pub fn describe(&self) -> String {
        let place = match &self.region {
            Some(region) => format!("{} in {region}", self.service),
            None => self.service.clone(),
        };
        let lacking = if self.missing_permission {
            format!(" (the role lacks {})", self.action)
        } else {
            String::new()
        };
        format!("{place}: {}{lacking}", self.message)
    }
}

/// What one account's scan found.
#[derive(Debug, Default)]
pub struct AccountScan {
    pub regions: BTreeSet<Region>,
    pub observations: Vec<Observation>,
    /// The (service, region) pairs read completely.
    pub read: BTreeSet<(Service, Region)>,
    pub errors: Vec<ScanError>,
    /// Calls made, per IAM action.
    pub calls: BTreeMap<&'static str, u64>,
}

/// The clients of one region, on the assumed role's credentials.
pub(super) struct RegionClients {
    pub(super) region: Region,
    pub(super) account_id: AwsAccountId,
    pub(super) config: SdkConfig,
}

/// A failure of one service in one region.
pub(super) type Read = Result<Vec<Observation>, ScanError>;

impl RegionClients {
    pub(super) fn failure<E, R>(
        &self,
        service: Service,
        action: &'static str,
        error: &aws_sdk_sts::error::SdkError<E, R>,
    ) -> ScanError
    where
        E: aws_sdk_sts::error::ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        ScanError::new(service.as_str(), Some(&self.region), action, error)
    }

    pub(super) fn observe(
        &self,
        service: Service,
        kind: impl Into<String>,
        resource_id: impl Into<String>,
        enabled: bool,
    ) -> Observation {
        Observation {
            service,
            region: self.region.clone(),
            kind: kind.into(),
            resource_id: resource_id.into(),
            enabled,
            detail: BTreeMap::new(),
        }
    }
}

#[derive(Clone)]
pub struct Scanner {
    base: SdkConfig,
    requests_per_second: f64,
}

impl Scanner {
    pub async fn new(settings: &AwsSettings) -> Self {
        Self {
            base: base_config(settings).await,
            requests_per_second: settings.requests_per_second,
        }
    }

    /// Scans one account in every region in scope.
    pub async fn scan(&self, target: &ScanTarget) -> AccountScan {
        let mut scan = AccountScan::default();
        let account = Throttle::with_rates(self.requests_per_second, &RATES);
        let Some(config) = self.assume(target, &account, &mut scan).await else {
            scan.calls = account.calls();
            return scan;
        };
        scan.regions = self.regions(target, &config, &account, &mut scan).await;
        let reads = futures::future::join_all(scan.regions.iter().map(|region| {
            let clients = RegionClients {
                region: region.clone(),
                account_id: target.account_id.clone(),
                config: config
                    .to_builder()
                    .region(aws_config::Region::new(region.as_str().to_owned()))
                    .build(),
            };
            async move {
                // AWS's quotas are per account and region: a schedule each.
                let throttle = Throttle::with_rates(self.requests_per_second, &RATES);
                let mut results = vec![];
                for service in Service::ALL {
                    results.push((service, read(&clients, &throttle, service).await));
                }
                (clients.region, results, throttle.calls())
            }
        }))
        .await;
        let mut calls = account.calls();
        for (region, results, region_calls) in reads {
            for (action, n) in region_calls {
                *calls.entry(action).or_default() += n;
            }
            for (service, result) in results {
                match result {
                    Ok(observations) => {
                        scan.read.insert((service, region.clone()));
                        scan.observations.extend(observations);
                    }
                    Err(error) => scan.errors.push(error),
                }
            }
        }
        scan.calls = calls;
        scan
    }

    /// The account's read-only role: one AssumeRole with the external id
    /// (a scan takes minutes; the session lasts an hour).
    async fn assume(&self, target: &ScanTarget, throttle: &Throttle, scan: &mut AccountScan) -> Option<SdkConfig> {
        let sts = aws_sdk_sts::Client::new(&self.base);
        throttle.wait("sts:AssumeRole").await;
        let assumed = sts
            .assume_role()
            .role_arn(&target.role_arn)
            .external_id(&target.external_id)
            .role_session_name("coverwatch-scan")
            .duration_seconds(3600)
            .send()
            .await;
        let credentials = match assumed {
            Ok(output) => output.credentials?.clone(),
            Err(error) => {
                scan.errors.push(ScanError::new("sts", None, "sts:AssumeRole", &error));
                return None;
            }
        };
        let credentials = aws_sdk_sts::config::Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            Some(credentials.session_token().to_owned()),
            None,
            "coverwatch-scan",
        );
        let config = self
            .base
            .to_builder()
            .credentials_provider(aws_sdk_sts::config::SharedCredentialsProvider::new(credentials))
            .build();
        // The role must be the account's (a role in another account would
        // scan the wrong estate).
        throttle.wait("sts:GetCallerIdentity").await;
        match aws_sdk_sts::Client::new(&config).get_caller_identity().send().await {
            Ok(identity) if identity.account() == Some(target.account_id.as_str()) => Some(config),
            Ok(identity) => {
                scan.errors.push(ScanError {
                    service: "sts".into(),
                    region: None,
                    action: "sts:GetCallerIdentity".into(),
                    message: format!(
                        "the role belongs to account {}, not {}",
                        identity.account().unwrap_or("?"),
                        target.account_id
                    ),
                    missing_permission: false,
                });
                None
            }
            Err(error) => {
                scan.errors
                    .push(ScanError::new("sts", None, "sts:GetCallerIdentity", &error));
                None
            }
        }
    }

    /// The enabled regions (opted in, or enabled by default), narrowed by
    /// the tenant; the connection's region when they cannot be listed.
    async fn regions(
        &self,
        target: &ScanTarget,
        config: &SdkConfig,
        throttle: &Throttle,
        scan: &mut AccountScan,
    ) -> BTreeSet<Region> {
        use aws_sdk_account::types::RegionOptStatus;
        let client = aws_sdk_account::Client::new(config);
        let mut enabled = BTreeSet::new();
        let mut token = None;
        let listed = loop {
            throttle.wait("account:ListRegions").await;
            let page = client
                .list_regions()
                .region_opt_status_contains(RegionOptStatus::Enabled)
                .region_opt_status_contains(RegionOptStatus::EnabledByDefault)
                .max_results(50)
                .set_next_token(token.take())
                .send()
                .await;
            match page {
                Ok(page) => {
                    enabled.extend(
                        page.regions()
                            .iter()
                            .filter_map(|r| r.region_name())
                            .filter_map(known_region),
                    );
                    match page.next_token() {
                        Some(next) => token = Some(next.to_owned()),
                        None => break true,
                    }
                }
                Err(error) => {
                    scan.errors
                        .push(ScanError::new("account", None, "account:ListRegions", &error));
                    break false;
                }
            }
        };
        match (&target.regions, listed) {
            (Some(narrowed), true) => narrowed.intersection(&enabled).cloned().collect(),
            (Some(narrowed), false) => narrowed.clone(),
            (None, true) => enabled,
            (None, false) => BTreeSet::from([target.home_region.clone()]),
        }
    }
}

/// Reads one service in one region.
async fn read(clients: &RegionClients, throttle: &Throttle, service: Service) -> Read {
    match service {
        Service::Guardduty => detectors::guardduty(clients, throttle).await,
        Service::Securityhub => detectors::securityhub(clients, throttle).await,
        Service::Config => logging::config(clients, throttle).await,
        Service::Cloudwatch => monitors::cloudwatch(clients, throttle).await,
        Service::Eventbridge => monitors::eventbridge(clients, throttle).await,
        Service::Cloudtrail => logging::cloudtrail(clients, throttle).await,
        Service::Accessanalyzer => detectors::access_analyzer(clients, throttle).await,
        Service::Inspector => detectors::inspector(clients, throttle).await,
        Service::Macie => detectors::macie(clients, throttle).await,
    }
}
