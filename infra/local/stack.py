#!/usr/bin/env python3
"""Local AWS for Stowage: starts the emulators on free loopback ports and
deploys infra/stowage.yaml to them.

LocalStack serves S3, SQS, EventBridge, CloudFormation, IAM and STS; moto
serves DynamoDB (through dynamodb_server.py, which applies its requests one at
a time so that transactions stay atomic). The template is deployed to
LocalStack as it is, with CreateTables=false, and its AWS::DynamoDB::Table
resources are created on moto from the same template, so there is one
description of the resources.

Commands:
  run [--state DIR] -- CMD...   start the emulators, run CMD with their
                                endpoints in its environment (and the paths
                                the end-to-end tests use: this script, its
                                Python, the emulators' logs, schemathesis),
                                stop them.
  deploy --name NAME            deploy one stack to running emulators (their
                                endpoints come from the environment) and print
                                its settings as KEY=value lines.
  dev [--state DIR]             start the emulators, deploy the `stowage`
                                stack, start the services, write
                                DIR/dev.env, and run until Ctrl-C or SIGTERM.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import botocore.config
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "stowage.yaml"
REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
LOCALSTACK_SERVICES = "s3,sqs,events,cloudformation,iam,sts"


def log(message):
    print(f"stack: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------- template


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form tags (!Ref, !Sub, ...) as the
    long-form intrinsic functions they stand for."""


def _intrinsic(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template():
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def _substitute(value, names):
    """Resolves the only intrinsics a table definition uses: !Sub and !Ref of
    parameters and pseudo parameters."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        text = value["Fn::Sub"]
        for key, replacement in names.items():
            text = text.replace("${" + key + "}", replacement)
        if "${" in text:
            raise SystemExit(f"cannot resolve {text!r} in a table definition")
        return text
    if isinstance(value, dict) and "Ref" in value:
        return names[value["Ref"]]
    if isinstance(value, dict):
        return {k: _substitute(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, names) for v in value]
    return value


def table_definitions(name, account):
    """The template's DynamoDB tables as CreateTable requests."""
    names = {"Name": name, "AWS::Region": REGION, "AWS::AccountId": account}
    tables = []
    for resource in load_template()["Resources"].values():
        if resource["Type"] != "AWS::DynamoDB::Table":
            continue
        props = _substitute(resource["Properties"], names)
        request = {
            "TableName": props["TableName"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            request["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        tables.append((request, props.get("TimeToLiveSpecification")))
    return tables


# --------------------------------------------------------------- emulators


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, what, timeout, process=None, log_file=None):
    """Polls `check` until it holds; gives up after `timeout` seconds, or at
    once when `process` (the one that should answer) has exited."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            where = f"; see {log_file}" if log_file else ""
            raise SystemExit(f"{what} exited with status {process.returncode}{where}")
        try:
            if check():
                return
        except (OSError, http.client.HTTPException):
            # Not listening yet, or not speaking HTTP yet.
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} did not become ready within {timeout} s")


def http_ok(url):
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


class Emulators:
    """LocalStack and moto, each in its own process group, on free ports."""

    def __init__(self, state):
        self.state = Path(state)
        self.processes = []
        self.env = {}

    def start(self):
        venvs = ROOT / ".stowage" / "venv"
        localstack_py = venvs / "localstack" / "bin" / "python"
        moto_py = venvs / "moto" / "bin" / "python"
        for path in (localstack_py, moto_py):
            if not path.exists():
                raise SystemExit(f"{path} is missing: run infra/local/bootstrap.sh first")

        ls_port, moto_port = free_port(), free_port()
        ls_root = self.state / "localstack"
        shutil.rmtree(ls_root, ignore_errors=True)
        (ls_root / "tmp").mkdir(parents=True)
        logs = self.state / "logs"
        logs.mkdir(parents=True, exist_ok=True)

        ls_env = dict(os.environ)
        ls_env.update(
            {
                "GATEWAY_SERVER": "hypercorn",
                "GATEWAY_LISTEN": f"127.0.0.1:{ls_port}",
                "LOCALSTACK_HOST": f"127.0.0.1:{ls_port}",
                "DNS_ADDRESS": "0",
                "FILESYSTEM_ROOT": str(ls_root),
                "TMPDIR": str(ls_root / "tmp"),
                "SERVICES": LOCALSTACK_SERVICES,
                "SQS_ENDPOINT_STRATEGY": "path",
                "DISABLE_EVENTS": "1",
                "SKIP_SSL_CERT_DOWNLOAD": "1",
                # LocalStack's own calls between its services (EventBridge
                # delivering to SQS, S3 notifying EventBridge) go straight
                # to its gateway instead of over HTTP to itself.
                "IN_MEMORY_CLIENT": "1",
            }
        )
        ls_process = self._spawn(
            [str(localstack_py), "-m", "localstack.runtime.main"], ls_env, logs / "localstack.log"
        )
        moto_process = self._spawn(
            [str(moto_py), str(ROOT / "infra" / "local" / "dynamodb_server.py"), "127.0.0.1", str(moto_port)],
            dict(os.environ),
            logs / "moto.log",
        )
        localstack = f"http://127.0.0.1:{ls_port}"
        moto = f"http://127.0.0.1:{moto_port}"
        wait_until(lambda: http_ok(f"{localstack}/_localstack/health"), "LocalStack", 120,
                   ls_process, logs / "localstack.log")
        wait_until(lambda: http_ok(f"{moto}/moto-api/"), "moto", 60, moto_process, logs / "moto.log")
        self.env = {
            "AWS_ENDPOINT_URL": localstack,
            "AWS_ENDPOINT_URL_DYNAMODB": moto,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            **CREDENTIALS,
        }
        log(f"LocalStack at {localstack}, moto (DynamoDB) at {moto}")
        return self.env

    def _spawn(self, argv, env, logfile):
        # Each start begins its logs afresh: they describe this run only, and
        # do not grow from one run to the next.
        out = open(logfile, "wb")
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def stop(self):
        stop_groups(self.processes, grace=3)
        self.processes = []


def stop_groups(processes, grace):
    """SIGTERM every process group, then SIGKILL what is left after `grace`
    seconds (LocalStack ignores SIGTERM)."""
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for process in processes:
        _signal_group(process, signal.SIGKILL)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            log(f"process {process.pid} did not exit")


def _signal_group(process, sig):
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# --------------------------------------------------------------- deploy


def client(service, endpoint):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=botocore.config.Config(retries={"max_attempts": 10, "mode": "standard"}),
    )


def deploy(name, env):
    """Deploys the stack `name` and returns the settings the services need."""
    aws = env["AWS_ENDPOINT_URL"]
    dynamodb = env.get("AWS_ENDPOINT_URL_DYNAMODB", aws)
    account = client("sts", aws).get_caller_identity()["Account"]

    ddb = client("dynamodb", dynamodb)
    for request, ttl in table_definitions(name, account):
        try:
            ddb.create_table(**request)
        except ddb.exceptions.ResourceInUseException:
            pass
        if ttl and ttl.get("Enabled"):
            ddb.update_time_to_live(
                TableName=request["TableName"],
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )

    cfn = client("cloudformation", aws)
    cfn.create_stack(
        StackName=name,
        TemplateBody=TEMPLATE.read_text(),
        Parameters=[
            {"ParameterKey": "Name", "ParameterValue": name},
            {"ParameterKey": "CreateTables", "ParameterValue": "false"},
        ],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    cfn.get_waiter("stack_create_complete").wait(
        StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 300}
    )
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return {
        **env,
        "STOWAGE_BUCKET": outputs["Bucket"],
        "STOWAGE_S3_PUBLIC_URL": f"{aws}/{outputs['Bucket']}",
        "STOWAGE_S3_PATH_STYLE": "true",
        "STOWAGE_EVENT_BUS": outputs["EventBus"],
        "STOWAGE_INTAKE_TABLE": outputs["IntakeTable"],
        "STOWAGE_LEDGER_TABLE": outputs["LedgerTable"],
        "STOWAGE_LIFECYCLE_TABLE": outputs["LifecycleTable"],
        "STOWAGE_LEDGER_QUEUE_URL": outputs["LedgerQueueUrl"],
        "STOWAGE_LEDGER_DLQ_URL": outputs["LedgerDlqUrl"],
        "STOWAGE_INTAKE_QUEUE_URL": outputs["IntakeQueueUrl"],
        "STOWAGE_INTAKE_DLQ_URL": outputs["IntakeDlqUrl"],
        "STOWAGE_LIFECYCLE_QUEUE_URL": outputs["LifecycleQueueUrl"],
        "STOWAGE_LIFECYCLE_DLQ_URL": outputs["LifecycleDlqUrl"],
    }


def env_lines(settings):
    return "".join(f"{key}={value}\n" for key, value in sorted(settings.items()))


# --------------------------------------------------------------- commands


class Stop(Exception):
    pass


def stop_with_parent():
    """Asks Linux to send SIGTERM when the parent (make, a shell) dies, so
    nothing this script started outlives it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _raise_stop(signum, frame):
    raise Stop()


def stop_on_signals():
    """Ctrl-C (SIGINT) and SIGTERM stop the stack. SIGINT is set explicitly:
    a shell starts a background job with SIGINT ignored, and Python then
    keeps ignoring it."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)


def cmd_run(args):
    emulators = Emulators(args.state)
    stop_on_signals()
    stop_with_parent()
    try:
        env = emulators.start()
        child_env = dict(os.environ)
        child_env.update(env)
        child_env["STOWAGE_STACK_SCRIPT"] = str(Path(__file__).resolve())
        child_env["STOWAGE_STACK_PYTHON"] = sys.executable
        child_env["STOWAGE_EMULATOR_LOGS"] = str(Path(args.state).resolve() / "logs")
        schemathesis = ROOT / ".stowage" / "venv" / "schemathesis" / "bin" / "schemathesis"
        child_env["STOWAGE_SCHEMATHESIS"] = str(schemathesis)
        return subprocess.call(args.command, env=child_env)
    except (KeyboardInterrupt, Stop):
        return 130
    finally:
        emulators.stop()


def cmd_deploy(args):
    env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_REGION",
                                      "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if k in os.environ}
    if "AWS_ENDPOINT_URL" not in env:
        raise SystemExit("AWS_ENDPOINT_URL is not set: deploy targets running emulators")
    env.setdefault("AWS_REGION", REGION)
    settings = deploy(args.name, env)
    if args.json:
        print(json.dumps(settings))
    else:
        sys.stdout.write(env_lines(settings))
    return 0


def cmd_dev(args):
    state = Path(args.state)
    emulators = Emulators(state)
    services = []
    stop_on_signals()
    stop_with_parent()
    try:
        env = emulators.start()
        settings = deploy("stowage", env)
        port = free_port()
        settings["STOWAGE_INTAKE_URL"] = f"http://127.0.0.1:{port}"
        settings["STOWAGE_LISTEN"] = f"127.0.0.1:{port}"
        settings["STOWAGE_JWT_SECRET"] = "stowage-local-development-secret"
        # A frontend's dev server may call the API from the origins the
        # bucket allows.
        origins = load_template()["Parameters"]["AllowedOrigins"]["Default"]
        settings["STOWAGE_CORS_ORIGINS"] = origins
        (state / "dev.env").write_text(env_lines(settings))
        logs = state / "logs"
        for service in ("intake", "ledger", "lifecycle"):
            binary = ROOT / "target" / "debug" / f"stowage-{service}"
            service_env = dict(os.environ)
            service_env.update(settings)
            services.append(subprocess.Popen([str(binary)], env=service_env, start_new_session=True,
                                             stdin=subprocess.DEVNULL))
        wait_until(lambda: http_ok(f"{settings['STOWAGE_INTAKE_URL']}/healthz"), "intake", 60, services[0])
        print(
            f"""
Stowage is running.
  intake API   {settings['STOWAGE_INTAKE_URL']}
  settings     {state / 'dev.env'}
  logs         {logs}

Get a token and ask for an upload grant:
  TOKEN=$(target/debug/stowctl token alice)
  curl -s -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
       -d '{{"path":"photos/cat.jpg","size":12345,"content_type":"image/jpeg"}}' \\
       {settings['STOWAGE_INTAKE_URL']}/v1/uploads

Ctrl-C stops everything.
""",
            flush=True,
        )
        while all(s.poll() is None for s in services):
            time.sleep(0.5)
        failed = [s.args[0] for s in services if s.poll() is not None]
        log(f"{', '.join(failed)} exited; stopping")
        return 1
    except (KeyboardInterrupt, Stop):
        return 0
    finally:
        stop_groups(services, grace=10)
        emulators.stop()
        log("stopped")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command_name", required=True)
    default_state = str(ROOT / ".stowage")

    run = sub.add_parser("run", help="run a command with emulators")
    run.add_argument("--state", default=default_state)
    run.add_argument("command", nargs=argparse.REMAINDER)
    run.set_defaults(func=cmd_run)

    dep = sub.add_parser("deploy", help="deploy one stack to running emulators")
    dep.add_argument("--name", required=True)
    dep.add_argument("--json", action="store_true")
    dep.set_defaults(func=cmd_deploy)

    dev = sub.add_parser("dev", help="the whole system, until Ctrl-C")
    dev.add_argument("--state", default=default_state)
    dev.set_defaults(func=cmd_dev)

    args = parser.parse_args()
    if getattr(args, "command", None) and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
