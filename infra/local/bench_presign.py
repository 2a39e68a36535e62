"""Times boto3's generate_presigned_post for the policy intake signs for one
upload grant: exact bucket and key, exact Content-Type, a content-length-range
of 0..size, AES256 server-side encryption and a 900 s expiry, with static
credentials (no network call is made).

Prints one JSON object: the mean microseconds per call, as wall-clock time
and as CPU time of the calling thread, the iteration count and the boto3
version. `bench_intake sign` runs it in turns with intake's signer.

    .stowage/venv/moto/bin/python infra/local/bench_presign.py [--iterations N]
"""

import argparse
import json
import time

import boto3
import botocore
from botocore.config import Config

BUCKET = "stowage-bench"
KEY = "users/bench/photos/cat.jpg"
SIZE = 12345
CONTENT_TYPE = "image/jpeg"
EXPIRES_IN = 900


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    args = parser.parse_args()

    client = boto3.client(
        "s3",
        region_name="us-east-1",
        aws_access_key_id="AKIAIOSFODNN7EXAMPLE",
        aws_secret_access_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        config=Config(signature_version="s3v4"),
    )

    def one():
        return client.generate_presigned_post(
            Bucket=BUCKET,
            Key=KEY,
            Fields={"Content-Type": CONTENT_TYPE, "x-amz-server-side-encryption": "AES256"},
            Conditions=[
                {"Content-Type": CONTENT_TYPE},
                ["content-length-range", 0, SIZE],
                {"x-amz-server-side-encryption": "AES256"},
            ],
            ExpiresIn=EXPIRES_IN,
        )

    signed = one()
    assert "x-amz-signature" in signed["fields"], signed
    for _ in range(args.warmup):
        one()
    started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
    for _ in range(args.iterations):
        one()
    cpu = time.thread_time_ns() - cpu_started
    elapsed = time.perf_counter_ns() - started
    print(
        json.dumps(
            {
                "wall_us": elapsed / args.iterations / 1_000,
                "cpu_us": cpu / args.iterations / 1_000,
                "iterations": args.iterations,
                "boto3": boto3.__version__,
                "botocore": botocore.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
