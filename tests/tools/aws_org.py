"""Builds AWS organizations in moto with boto3 for the discovery tests and
the discovery benchmark, and walks one the plain way (boto3, sequential) as
the benchmark's baseline.

  aws_org.py rich  --endpoint URL   the test organization (JSON ids on stdout)
  aws_org.py big   --endpoint URL --accounts N --ous M
  aws_org.py walk  --endpoint URL   a sequential boto3 walk, timed (JSON)
"""

import argparse
import json
import time

import boto3


def client(service, endpoint):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def create_account(org, name):
    created = org.create_account(AccountName=name, Email=f"{name}@acme.test")
    return created["CreateAccountStatus"]["AccountId"]


def rich(endpoint):
    """Root/Production/Web/Api (three levels), Root/Sandbox, Root/Security;
    a GuardDuty delegated administrator, an SCP on two OUs, an organization
    trail (logging) beside a plain one, an organization Config aggregator."""
    org = client("organizations", endpoint)
    org_id = org.create_organization(FeatureSet="ALL")["Organization"]["Id"]
    root = org.list_roots()["Roots"][0]["Id"]
    ous = {}
    for name, parent in [
        ("Production", None),
        ("Web", "Production"),
        ("Api", "Web"),
        ("Sandbox", None),
        ("Security", None),
    ]:
        parent_id = ous[parent] if parent else root
        ous[name] = org.create_organizational_unit(ParentId=parent_id, Name=name)["OrganizationalUnit"]["Id"]
    accounts = {}
    for name, ou in [
        ("web-1", "Web"),
        ("api-1", "Api"),
        ("api-2", "Api"),
        ("sandbox-1", "Sandbox"),
        ("security", "Security"),
    ]:
        accounts[name] = create_account(org, name)
        org.move_account(AccountId=accounts[name], SourceParentId=root, DestinationParentId=ous[ou])

    org.enable_aws_service_access(ServicePrincipal="guardduty.amazonaws.com")
    org.register_delegated_administrator(
        AccountId=accounts["security"], ServicePrincipal="guardduty.amazonaws.com"
    )

    org.enable_policy_type(RootId=root, PolicyType="SERVICE_CONTROL_POLICY")
    policy = org.create_policy(
        Name="DenyLeaveOrganization",
        Description="members stay in the organization",
        Type="SERVICE_CONTROL_POLICY",
        Content=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Deny", "Action": "organizations:LeaveOrganization", "Resource": "*"}],
            }
        ),
    )["Policy"]["PolicySummary"]["Id"]
    for ou in ["Production", "Sandbox"]:
        org.attach_policy(PolicyId=policy, TargetId=ous[ou])

    s3 = client("s3", endpoint)
    s3.create_bucket(Bucket="acme-org-trail")
    trail = client("cloudtrail", endpoint)
    created = trail.create_trail(
        Name="org-trail", S3BucketName="acme-org-trail", IsMultiRegionTrail=True, IsOrganizationTrail=True
    )
    trail.start_logging(Name="org-trail")
    trail.create_trail(Name="account-trail", S3BucketName="acme-org-trail")

    config = client("config", endpoint)
    aggregator = config.put_configuration_aggregator(
        ConfigurationAggregatorName="org-aggregator",
        OrganizationAggregationSource={
            "RoleArn": "arn:aws:iam::123456789012:role/ConfigAggregator",
            "AllAwsRegions": True,
        },
    )["ConfigurationAggregator"]["ConfigurationAggregatorArn"]
    return {
        "org_id": org_id,
        "root": root,
        "ous": ous,
        "accounts": accounts,
        "policy": policy,
        "trail_arn": created["TrailARN"],
        "aggregator_arn": aggregator,
    }


def big(endpoint, accounts, ous):
    """`ous` OUs (a third nested one level down) and `accounts` accounts
    spread over the root and the OUs."""
    org = client("organizations", endpoint)
    org_id = org.create_organization(FeatureSet="ALL")["Organization"]["Id"]
    root = org.list_roots()["Roots"][0]["Id"]
    parents = [root]
    top = []
    for i in range(ous):
        parent = top[i % len(top)] if top and i % 3 == 2 else root
        ou = org.create_organizational_unit(ParentId=parent, Name=f"ou-{i:02d}")["OrganizationalUnit"]["Id"]
        if parent == root:
            top.append(ou)
        parents.append(ou)
    for i in range(accounts):
        account = create_account(org, f"acct-{i:05d}")
        parent = parents[i % len(parents)]
        if parent != root:
            org.move_account(AccountId=account, SourceParentId=root, DestinationParentId=parent)
    return {"org_id": org_id, "root": root}


def walk(endpoint):
    """The plain way: one call after another, pages of 20, no parallelism."""
    org = client("organizations", endpoint)
    start = time.perf_counter()
    calls = 1
    root = org.list_roots()["Roots"][0]["Id"]
    pending = [root]
    found_ous = found_accounts = 0
    while pending:
        parent = pending.pop()
        kwargs = {"ParentId": parent, "MaxResults": 20}
        while True:
            page = org.list_organizational_units_for_parent(**kwargs)
            calls += 1
            for ou in page["OrganizationalUnits"]:
                pending.append(ou["Id"])
                found_ous += 1
            if "NextToken" not in page:
                break
            kwargs["NextToken"] = page["NextToken"]
        kwargs = {"ParentId": parent, "MaxResults": 20}
        while True:
            page = org.list_accounts_for_parent(**kwargs)
            calls += 1
            found_accounts += len(page["Accounts"])
            if "NextToken" not in page:
                break
            kwargs["NextToken"] = page["NextToken"]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "calls": calls, "ous": found_ous, "accounts": found_accounts}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["rich", "big", "walk"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--ous", type=int, default=30)
    args = parser.parse_args()
    if args.what == "rich":
        out = rich(args.endpoint)
    elif args.what == "big":
        out = big(args.endpoint, args.accounts, args.ous)
    else:
        out = walk(args.endpoint)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
