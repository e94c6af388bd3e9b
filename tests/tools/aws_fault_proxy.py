"""A fault-injecting HTTP proxy in front of moto, for what moto itself does
not offer: throttling responses, a subtree or a source that cannot be read,
and member roles that cannot be assumed (moto's STS accepts any role). It is
the only hand-written stand-in in the AWS tests; everything it forwards is
answered by moto.

  aws_fault_proxy.py --port P --upstream http://127.0.0.1:M

POST /_faults with JSON replaces the rules:
  {"throttle": {"ListAccountsForParent": 3}}   the first 3 calls are throttled
  {"deny_parents": ["ou-..."]}                 listing under these is denied
  {"deny_operations": ["DescribeTrails"]}      these are denied
  {"deny_roles": ["arn:aws:iam::1:role/R"]}    AssumeRole into these is denied
GET /_stats: {"throttled": {op: n}, "forwarded": {op: n}, "denied": {op: n}}.
"""

import argparse
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
RULES = {}
STATS = {"throttled": {}, "forwarded": {}, "denied": {}}


def count(kind, operation):
    STATS[kind][operation] = STATS[kind].get(operation, 0) + 1


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

    def do_GET(self):
        if self.path == "/_stats":
            with LOCK:
                body = json.dumps(STATS).encode()
            return self.reply(200, body, [("Content-Type", "application/json")])
        self.forward(b"")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/_faults":
            with LOCK:
                RULES.clear()
                RULES.update(json.loads(body or b"{}"))
                for kind in STATS.values():
                    kind.clear()
            return self.reply(200, b"{}", [("Content-Type", "application/json")])
        target = self.headers.get("X-Amz-Target", "")
        if target:
            operation = target.rsplit(".", 1)[-1]
            fault = self.json_fault(operation, body)
        else:
            form = urllib.parse.parse_qs(body.decode(errors="replace"))
            operation = form.get("Action", [""])[0]
            fault = self.query_fault(operation, form)
        if fault:
            return self.reply(*fault)
        self.forward(body, operation)

    def json_fault(self, operation, body):
        """awsJson protocol errors (Organizations, CloudTrail, Config)."""
        with LOCK:
            left = RULES.get("throttle", {}).get(operation, 0)
            if left > 0:
                RULES["throttle"][operation] = left - 1
                count("throttled", operation)
                code, status, message = "TooManyRequestsException", 400, "Rate exceeded"
            else:
                try:
                    parent = json.loads(body or b"{}").get("ParentId")
                except ValueError:
                    parent = None
                denied = operation in RULES.get("deny_operations", []) or (
                    parent is not None and parent in RULES.get("deny_parents", [])
                )
                if not denied:
                    return None
                count("denied", operation)
                code, status, message = "AccessDeniedException", 400, "denied by the test's fault proxy"
        payload = json.dumps({"__type": code, "message": message, "Message": message}).encode()
        return status, payload, [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-ErrorType", code)]

    def query_fault(self, operation, form):
        """STS (query protocol): AssumeRole into a denied role."""
        role = form.get("RoleArn", [""])[0]
        with LOCK:
            if operation != "AssumeRole" or role not in RULES.get("deny_roles", []):
                return None
            count("denied", operation)
        message = f"User is not authorized to perform: sts:AssumeRole on resource: {role}"
        payload = (
            '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
            f"<Code>AccessDenied</Code><Message>{message}</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
        ).encode()
        return 403, payload, [("Content-Type", "text/xml")]

    def forward(self, body, operation=""):
        if operation:
            with LOCK:
                count("forwarded", operation)
        request = urllib.request.Request(
            UPSTREAM + self.path,
            data=body if self.command != "GET" else None,
            method=self.command,
            headers={k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, headers, payload = response.status, response.getheaders(), response.read()
        except urllib.error.HTTPError as error:
            status, headers, payload = error.code, error.headers.items(), error.read()
        skip = ("content-length", "transfer-encoding", "connection", "server", "date")
        self.reply(status, payload, [(k, v) for k, v in headers if k.lower() not in skip])


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
