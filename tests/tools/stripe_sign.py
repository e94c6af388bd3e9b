"""Signs a webhook body the way Stripe does, with the official `stripe`
library's own function, so the tests do not sign with Coverwatch's code.

usage: python stripe_sign.py SECRET TIMESTAMP < body   (prints the header)
       python stripe_sign.py SECRET TIMESTAMP --many < JSON array of bodies
                                                (prints a JSON array of headers)
"""

import json
import sys

from stripe._webhook import WebhookSignature

secret, timestamp = sys.argv[1], int(sys.argv[2])
payload = sys.stdin.buffer.read().decode("utf-8")
if sys.argv[3:] == ["--many"]:
    bodies = json.loads(payload)
    print(json.dumps([WebhookSignature.generate_signature_header(b, secret, timestamp) for b in bodies]), end="")
else:
    print(WebhookSignature.generate_signature_header(payload, secret, timestamp), end="")
