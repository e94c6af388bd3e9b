"""The discovery benchmark (`make bench-discovery`): a 1,000-account, 30-OU
organization in moto; a plain sequential boto3 walk of it (the baseline) and
Coverwatch's full discovery, in the same run, a few times each; the ratio;
and the time at AWS's real throttles, computed from the calls made and
measured with discovery paced at AWS's rate.

  bench_discovery.py --coverwatch PATH [--accounts 1000] [--ous 30] [--runs 3]
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
AWS_RATE = 8.0  # requests/s per operation: Organizations' ListAccounts limit


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool(*args):
    out = subprocess.run(
        [sys.executable, os.path.join(HERE, "aws_org.py"), *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout)


def coverwatch(binary, endpoint, org_id, rate):
    out = subprocess.run(
        [binary, "bench-discovery", "--endpoint", endpoint, "--organization-id", org_id,
         "--requests-per-second", str(rate)],
        check=True, capture_output=True, text=True, env={**os.environ, "RUST_LOG": "error"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--coverwatch", required=True)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--ous", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    port = free_port()
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/")
                break
            except OSError:
                time.sleep(0.1)
        started = time.perf_counter()
        org = tool("big", "--endpoint", endpoint, "--accounts", str(args.accounts), "--ous", str(args.ous))
        print(f"organization: {args.accounts} accounts, {args.ous} OUs in moto "
              f"(built in {time.perf_counter() - started:.1f} s)")

        walks, discoveries = [], []
        for _ in range(args.runs):
            walks.append(tool("walk", "--endpoint", endpoint))
            discoveries.append(coverwatch(args.coverwatch, endpoint, org["org_id"], 0))
        walk = statistics.median(w["seconds"] for w in walks)
        found = discoveries[0]
        assert found["accounts"] == args.accounts + 1, found  # + the management account
        assert found["ous"] == args.ous, found
        assert walks[0]["accounts"] == args.accounts + 1, walks[0]
        full = statistics.median(d["seconds"] for d in discoveries)
        print(f"plain boto3 walk, sequential (hierarchy only, {walks[0]['calls']} calls): "
              f"median {walk:.2f} s of {[round(w['seconds'], 2) for w in walks]}")
        print(f"coverwatch discovery, unpaced (hierarchy + admins, SCPs, trails, aggregators; "
              f"{sum(found['calls'].values())} calls): median {full:.2f} s of "
              f"{[round(d['seconds'], 2) for d in discoveries]}")
        print(f"ratio walk / discovery: {walk / full:.2f} (target >= 1: no slower than the plain walk)")

        # At AWS's throttles each operation gets AWS_RATE calls per second;
        # operations proceed side by side, so the busiest one bounds the run.
        busiest = max(found["calls"].items(), key=lambda kv: kv[1])
        computed = busiest[1] / AWS_RATE
        print(f"calls per operation: {json.dumps(found['calls'], sort_keys=True)}")
        print(f"computed at AWS's {AWS_RATE:g} requests/s per operation: {busiest[0]} x {busiest[1]} "
              f"-> {computed:.1f} s (target: 1,000 accounts under 180 s)")
        paced = coverwatch(args.coverwatch, endpoint, org["org_id"], AWS_RATE)
        print(f"measured with discovery paced at {AWS_RATE:g} requests/s per operation: {paced['seconds']:.1f} s")
        pages_50k = 50_000 / 20
        print(f"a 50,000-account organization: at least {pages_50k:.0f} ListAccountsForParent pages of 20, "
              f"{pages_50k / AWS_RATE / 60:.1f} min at {AWS_RATE:g}/s; OU listing runs beside it")
    finally:
        moto.terminate()
        moto.wait()


if __name__ == "__main__":
    main()
