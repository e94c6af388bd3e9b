"""A fault-injecting HTTP proxy in front of moto, for what moto itself does
not offer: throttling, denied calls (per operation, account and region), a
subtree or a source that cannot be read, member roles that cannot be
assumed (moto's STS accepts any role), and canned answers for the calls
moto lacks (account:ListRegions, Security Hub standards and controls, IAM
Access Analyzer analyzers, Config conformance packs). It is the only
hand-written stand-in in the AWS tests; everything else it forwards is
answered by moto, with two fidelity fixes said where they are made (CBOR
answers for CloudWatch, zoned times for Macie).

  aws_fault_proxy.py --port P --upstream http://127.0.0.1:M

POST /_faults with JSON replaces the rules:
  {"throttle": {"ListAccountsForParent": 3}}   the first 3 calls are throttled
  {"deny_parents": ["ou-..."]}                 listing under these is denied
  {"deny_operations": ["DescribeTrails"]}      these are denied
  {"deny_roles": ["arn:aws:iam::1:role/R"]}    AssumeRole into these is denied
  {"deny": [{"action": "guardduty:GetDetector", "account": "1111...", "region": "eu-west-3"}]}
                                               an IAM action denied (account and region optional)
  {"regions": {"<account>": ["us-east-1", ...], "default": [...]}}
                                               account:ListRegions answers (default us-east-1)
  {"securityhub": {"<account>/<region>": {"standards": ["arn:..."], "controls": {"IAM.1": "ENABLED"}}}}
  {"analyzers": {"<account>/<region>": [{"name": "a", "type": "ACCOUNT", "status": "ACTIVE"}]}}
  {"delay_ms": 200}                            every call answered that much later
  {"account_delay_ms": 300}                    calls made with an account's assumed role, that much later
GET /_stats: {"throttled": {op: n}, "forwarded": {op: n}, "denied": {op: n},
              "calls": {"<account>/<region>/<action>": n}}.

The account of a request is known from the credentials moto's STS issued
(the proxy reads every AssumeRole answer it forwards); other credentials
(Coverwatch's own) count as "principal". The region and the service come
from the request's SigV4 credential scope.
"""

import argparse
import datetime
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cbor2

LOCK = threading.Lock()
RULES = {}
STATS = {"throttled": {}, "forwarded": {}, "denied": {}, "calls": {}}
# Access key id -> account id, from the AssumeRole answers forwarded.
KEYS = {}

# The IAM prefix of a SigV4 service name.
IAM_PREFIX = {"monitoring": "cloudwatch", "events": "events", "logs": "logs"}

# REST-JSON operations: (service, method, path pattern) -> operation.
REST = [
    ("guardduty", "GET", r"^/detector$", "ListDetectors"),
    ("guardduty", "GET", r"^/detector/[^/]+$", "GetDetector"),
    ("securityhub", "GET", r"^/accounts$", "DescribeHub"),
    ("securityhub", "POST", r"^/standards/get$", "GetEnabledStandards"),
    ("securityhub", "GET", r"^/standards/controls/.+$", "DescribeStandardsControls"),
    ("access-analyzer", "GET", r"^/analyzer$", "ListAnalyzers"),
    ("inspector2", "POST", r"^/status/batch/get$", "BatchGetAccountStatus"),
    ("macie2", "GET", r"^/macie$", "GetMacieSession"),
    ("account", "POST", r"^/listRegions$", "ListRegions"),
]


def count(kind, operation):
    STATS[kind][operation] = STATS[kind].get(operation, 0) + 1


def scope(headers):
    """(access key, region, service) of the request's SigV4 signature."""
    match = re.search(r"Credential=([^/]+)/\d+/([^/]+)/([^/]+)/", headers.get("Authorization", ""))
    if not match:
        return None, None, None
    return match.group(1), match.group(2), match.group(3)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def json_reply(self, payload, status=200):
        body = json.dumps(payload).encode()
        return self.reply(status, body, [("Content-Type", "application/json")])

    def do_GET(self):
        if self.path == "/_stats":
            with LOCK:
                body = json.dumps(STATS).encode()
            return self.reply(200, body, [("Content-Type", "application/json")])
        self.handle_call(b"")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/_faults":
            with LOCK:
                RULES.clear()
                RULES.update(json.loads(body or b"{}"))
                for kind in STATS.values():
                    kind.clear()
            return self.reply(200, b"{}", [("Content-Type", "application/json")])
        self.handle_call(body)

    def do_PUT(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.handle_call(body)

    def do_DELETE(self):
        self.handle_call(b"")

    def handle_call(self, body):
        key, region, service = scope(self.headers)
        with LOCK:
            account = KEYS.get(key, "principal" if key else None)
            delay = RULES.get("delay_ms", 0)
            if account not in (None, "principal"):
                delay += RULES.get("account_delay_ms", 0)
        if delay:
            time.sleep(delay / 1000)
        target = self.headers.get("X-Amz-Target", "")
        path = urllib.parse.urlparse(self.path).path
        protocol = "rest"
        if target:
            operation, protocol = target.rsplit(".", 1)[-1], "json"
        elif "/operation/" in path:
            operation, protocol = path.rsplit("/", 1)[-1], "cbor"
        else:
            operation = next(
                (op for svc, method, pattern, op in REST if svc == service and method == self.command and re.match(pattern, path)),
                None,
            )
            if operation is None and self.command == "POST":
                form = urllib.parse.parse_qs(body.decode(errors="replace"))
                operation, protocol = form.get("Action", [""])[0], "query"
        operation = operation or ""
        action = f"{IAM_PREFIX.get(service, service)}:{operation}"
        if account and region and operation:
            with LOCK:
                count("calls", f"{account}/{region}/{action}")
        fault = self.fault(operation, action, account, region, protocol, body)
        if fault:
            return self.reply(*fault)
        canned = self.canned(service, operation, account, region, path)
        if canned is not None:
            with LOCK:
                count("forwarded", operation)
            return self.json_reply(canned)
        self.forward(body, operation)

    def fault(self, operation, action, account, region, protocol, body):
        with LOCK:
            left = RULES.get("throttle", {}).get(operation, 0)
            if left > 0:
                RULES["throttle"][operation] = left - 1
                count("throttled", operation)
                return error(protocol, "TooManyRequestsException", "Rate exceeded", 400)
            if protocol == "query" and operation == "AssumeRole":
                form = urllib.parse.parse_qs(body.decode(errors="replace"))
                role = form.get("RoleArn", [""])[0]
                if role in RULES.get("deny_roles", []):
                    count("denied", operation)
                    message = f"User is not authorized to perform: sts:AssumeRole on resource: {role}"
                    return error("query", "AccessDenied", message, 403)
                return None
            denied = operation in RULES.get("deny_operations", [])
            if protocol == "json":
                try:
                    parent = json.loads(body or b"{}").get("ParentId")
                except ValueError:
                    parent = None
                denied = denied or (parent is not None and parent in RULES.get("deny_parents", []))
            for rule in RULES.get("deny", []):
                if (
                    rule.get("action") == action
                    and rule.get("account") in (None, account)
                    and rule.get("region") in (None, region)
                ):
                    denied = True
            if not denied:
                return None
            count("denied", operation)
        message = f"User is not authorized to perform: {action} (denied by the test's fault proxy)"
        code = "AccessDenied" if protocol == "query" else "AccessDeniedException"
        return error(protocol, code, message, 403 if protocol in ("rest", "query") else 400)

    def canned(self, service, operation, account, region, path):
        """Answers for the calls moto lacks, from the rules."""
        place = f"{account}/{region}"
        with LOCK:
            if service == "account" and operation == "ListRegions":
                regions = RULES.get("regions", {})
                names = regions.get(account) or regions.get("default") or ["us-east-1"]
                return {"Regions": [{"RegionName": r, "RegionOptStatus": "ENABLED_BY_DEFAULT"} for r in names]}
            if service == "securityhub" and operation == "GetEnabledStandards":
                hub = RULES.get("securityhub", {}).get(place, {})
                return {
                    "StandardsSubscriptions": [
                        {
                            "StandardsSubscriptionArn": f"{arn}/subscription/{account}/{region}",
                            "StandardsArn": arn,
                            "StandardsInput": {},
                            "StandardsStatus": "READY",
                        }
                        for arn in hub.get("standards", [])
                    ]
                }
            if service == "securityhub" and operation == "DescribeStandardsControls":
                hub = RULES.get("securityhub", {}).get(place, {})
                subscription = urllib.parse.unquote(path.split("/standards/controls/", 1)[1])
                return {
                    "Controls": [
                        {
                            "StandardsControlArn": f"{subscription}/control/{control}",
                            "ControlId": control,
                            "ControlStatus": status,
                        }
                        for control, status in sorted(hub.get("controls", {}).items())
                    ]
                }
            if service == "access-analyzer" and operation == "ListAnalyzers":
                found = RULES.get("analyzers", {}).get(place, [])
                return {
                    "analyzers": [
                        {
                            "arn": f"arn:aws:access-analyzer:{region}:{account}:analyzer/{a['name']}",
                            "name": a["name"],
                            "type": a.get("type", "ACCOUNT"),
                            "createdAt": "2026-01-01T00:00:00Z",
                            "status": a.get("status", "ACTIVE"),
                        }
                        for a in found
                    ]
                }
            if service == "config" and operation == "DescribeConformancePacks":
                return {"ConformancePackDetails": []}
        return None

    def forward(self, body, operation=""):
        if operation:
            with LOCK:
                count("forwarded", operation)
        path = self.path
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        rpc_cbor = "/operation/" in path
        if rpc_cbor:
            # Fidelity fix: the SDK speaks RPC-v2 CBOR to CloudWatch at
            # /service/<target>/operation/<op>, which moto does not route; moto
            # answers the same operation in the JSON protocol at "/".
            service, op = re.match(r"^/service/([^/]+)/operation/([^/?]+)", path).groups()
            body = json.dumps(plain(cbor2.loads(body)) if body else {}).encode()
            headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type", "smithy-protocol")}
            headers["Content-Type"] = "application/x-amz-json-1.0"
            headers["X-Amz-Target"] = f"{service}.{op}"
            path = "/"
        request = urllib.request.Request(
            UPSTREAM + path,
            data=body if self.command not in ("GET", "DELETE") else None,
            method=self.command,
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, headers, payload = response.status, response.getheaders(), response.read()
        except urllib.error.HTTPError as failure:
            status, headers, payload = failure.code, failure.headers.items(), failure.read()
        if operation == "AssumeRole" and status == 200:
            remember(payload)
        skip = ("content-length", "transfer-encoding", "connection", "server", "date")
        headers = [(k, v) for k, v in headers if k.lower() not in skip]
        if rpc_cbor and payload[:1] in (b"{", b"["):
            # ... and its JSON answer goes back as CBOR, times as epoch seconds.
            payload = cbor2.dumps(epochs(json.loads(payload)))
            headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
            headers += [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")]
        elif operation == "GetMacieSession" and status == 200:
            # Fidelity fix: moto's times lack a zone (RFC 3339 needs one).
            session = json.loads(payload)
            for field in ("createdAt", "updatedAt"):
                if isinstance(session.get(field), str) and not session[field].endswith("Z"):
                    session[field] += "Z"
            payload = json.dumps(session).encode()
        self.reply(status, payload, headers)


TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


def epochs(value, key=""):
    """JSON values as CBOR wants them: times (ISO or epoch) as tagged epoch seconds."""
    if isinstance(value, dict):
        return {k: epochs(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [epochs(v) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key.endswith("Timestamp"):
        return cbor2.CBORTag(1, float(value))
    if isinstance(value, str) and TIMESTAMP.match(value):
        try:
            moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.timezone.utc)
        return cbor2.CBORTag(1, moment.timestamp())
    return value


def plain(value):
    """A decoded CBOR request as JSON: tagged times as epoch seconds."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, cbor2.CBORTag):
        return plain(value.value)
    return value


def remember(payload):
    """Notes which account the credentials of an AssumeRole answer act in."""
    text = payload.decode(errors="replace")
    key = re.search(r"<AccessKeyId>([^<]+)</AccessKeyId>", text)
    arn = re.search(r"<Arn>arn:aws:sts::(\d{12}):assumed-role/", text)
    if key and arn:
        with LOCK:
            KEYS[key.group(1)] = arn.group(1)


def error(protocol, code, message, status):
    if protocol == "query":
        payload = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
            f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
        ).encode()
        return status, payload, [("Content-Type", "text/xml")]
    payload = json.dumps({"__type": code, "message": message, "Message": message}).encode()
    content = "application/x-amz-json-1.1" if protocol == "json" else "application/json"
    return status, payload, [("Content-Type", content), ("x-amzn-ErrorType", code)]


def main():
    global UPSTREAM
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    UPSTREAM = args.upstream.rstrip("/")
    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
