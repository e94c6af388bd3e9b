//! The read-only audit role Coverwatch assumes in a tenant's accounts, as a
//! CloudFormation (StackSet) template and a Terraform module, with the
//! tenant's external id filled in. The permissions are exactly the calls
//! discovery and account scans make, all read-only.

use serde_json::json;

/// What discovery calls in the management account (GuardDuty's and
/// Security Hub's administrators are read as Organizations' delegated
/// administrators).
pub const DISCOVERY_ACTIONS: [&str; 11] = [
    "organizations:DescribeOrganization",
    "organizations:ListRoots",
    "organizations:ListOrganizationalUnitsForParent",
    "organizations:ListAccountsForParent",
    "organizations:ListDelegatedAdministrators",
    "organizations:ListDelegatedServicesForAccount",
    "organizations:ListPolicies",
    "organizations:ListTargetsForPolicy",
    "cloudtrail:DescribeTrails",
    "cloudtrail:GetTrailStatus",
    "config:DescribeConfigurationAggregators",
];

/// What an account scan calls in each account (besides `sts:AssumeRole`
/// into it, which the trust policy grants); a test compares it with the
/// calls a scan makes.
pub const SCAN_ACTIONS: [&str; 21] = [
    "account:ListRegions",
    "sts:GetCallerIdentity",
    "guardduty:ListDetectors",
    "guardduty:GetDetector",
    "securityhub:DescribeHub",
    "securityhub:GetEnabledStandards",
    "securityhub:DescribeStandardsControls",
    "config:DescribeConfigurationRecorders",
    "config:DescribeConfigurationRecorderStatus",
    "config:DescribeConfigRules",
    "config:DescribeConformancePacks",
    "logs:DescribeMetricFilters",
    "cloudwatch:DescribeAlarms",
    "events:ListRules",
    "events:ListTargetsByRule",
    "cloudtrail:DescribeTrails",
    "cloudtrail:GetTrailStatus",
    "cloudtrail:GetEventSelectors",
    "access-analyzer:ListAnalyzers",
    "inspector2:BatchGetAccountStatus",
    "macie2:GetMacieSession",
];

/// Every action the role allows: exactly what discovery and scans call, all
/// read-only, sorted.
pub fn read_only_actions() -> Vec<&'static str> {
    let all: std::collections::BTreeSet<&str> = DISCOVERY_ACTIONS.into_iter().chain(SCAN_ACTIONS).collect();
    all.into_iter().collect()
}

/// What the templates are made for.
pub struct RoleTemplate<'a> {
    /// The role's name in every account.
    pub role_name: &'a str,
    /// Who assumes it: Coverwatch's AWS principal.
    pub trusted_principal_arn: &'a str,
    /// The tenant's external id, required by the trust policy.
    pub external_id: &'a str,
}

impl RoleTemplate<'_> {
    fn trust_policy(&self) -> serde_json::Value {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"AWS": self.trusted_principal_arn},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": self.external_id}}
            }]
        })
    }

    fn permissions(&self) -> serde_json::Value {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "CoverwatchReadOnly",
                "Effect": "Allow",
                "Action": read_only_actions(),
                "Resource": "*"
            }]
        })
    }

    /// A CloudFormation template (JSON), deployable as a StackSet across the
    /// organization's accounts.
    pub fn cloudformation(&self) -> String {
        let template = json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Description": "Coverwatch read-only audit role (deploy as a StackSet to every account).",
            "Resources": {
                "CoverwatchAuditRole": {
                    "Type": "AWS::IAM::Role",
                    "Properties": {
                        "RoleName": self.role_name,
                        "MaxSessionDuration": 3600,
                        "AssumeRolePolicyDocument": self.trust_policy(),
                        "Policies": [{
                            "PolicyName": "CoverwatchReadOnly",
                            "PolicyDocument": self.permissions()
                        }]
                    }
                }
            },
            "Outputs": {
                "RoleArn": {"Value": {"Fn::GetAtt": ["CoverwatchAuditRole", "Arn"]}}
            }
        });
        serde_json::to_string_pretty(&template).expect("a JSON value serializes")
    }

    /// A Terraform module (HCL) creating the same role in one account.
    pub fn terraform(&self) -> String {
        let trust = serde_json::to_string_pretty(&self.trust_policy()).expect("JSON");
        let permissions = serde_json::to_string_pretty(&self.permissions()).expect("JSON");
        format!(
            r#"# Coverwatch read-only audit role. Apply in every account Coverwatch connects
# (for example with one provider alias per account).

resource "aws_iam_role" "coverwatch_audit" {{
  name                 = "{role_name}"
  max_session_duration = 3600
  assume_role_policy   = <<-POLICY
{trust}
  POLICY
}}

resource "aws_iam_role_policy" "coverwatch_read_only" {{
  name   = "CoverwatchReadOnly"
  role   = aws_iam_role.coverwatch_audit.id
  policy = <<-POLICY
{permissions}
  POLICY
}}

output "role_arn" {{
  value = aws_iam_role.coverwatch_audit.arn
}}
"#,
            role_name = self.role_name,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> RoleTemplate<'static> {
        RoleTemplate {
            role_name: "CoverwatchAudit",
            trusted_principal_arn: "arn:aws:iam::111122223333:root",
            external_id: "coverwatch-tenant-1",
        }
    }

    #[test]
    fn the_cloudformation_role_trusts_only_coverwatch_with_the_external_id() {
        let parsed: serde_json::Value = serde_json::from_str(&template().cloudformation()).unwrap();
        let role = &parsed["Resources"]["CoverwatchAuditRole"]["Properties"];
        assert_eq!(role["RoleName"], "CoverwatchAudit");
        let trust = &role["AssumeRolePolicyDocument"]["Statement"][0];
        assert_eq!(trust["Principal"]["AWS"], "arn:aws:iam::111122223333:root");
        assert_eq!(
            trust["Condition"]["StringEquals"]["sts:ExternalId"],
            "coverwatch-tenant-1"
        );
        let actions = role["Policies"][0]["PolicyDocument"]["Statement"][0]["Action"]
            .as_array()
            .unwrap();
        assert_eq!(actions.len(), read_only_actions().len());
        // Read-only: every action is a Describe, Get, BatchGet or List.
        for action in actions {
            let verb = action.as_str().unwrap().split(':').nth(1).unwrap();
            assert!(
                ["Describe", "Get", "BatchGet", "List"]
                    .iter()
                    .any(|v| verb.starts_with(v)),
                "{verb}"
            );
        }
    }

    #[test]
    fn the_terraform_module_carries_the_same_role() {
        let module = template().terraform();
        assert!(module.contains(r#"name                 = "CoverwatchAudit""#));
        assert!(module.contains(r#""sts:ExternalId": "coverwatch-tenant-1""#));
        assert!(module.contains("organizations:ListAccountsForParent"));
        assert_eq!(module.matches('{').count(), module.matches('}').count());
    }
}
