#!/usr/bin/python3
"""Checks cloudformation.yaml against the epc-import binary it deploys.

    test_template.py --binary build/epc-import --template cloudformation.yaml

Every job definition's Command (Ref::x replaced by the job definition's parameter defaults, the
template's intrinsics by plausible values) must be accepted by the real binary's --dry-run, with the
environment the job gets, and the effective configuration it prints must be what the template
means. Then the parameters' constraints, the environment variables against --help, the secrets,
the retry strategy, the schedule, the buckets, the roles and the outputs. Finally the same checks
run against deliberately broken copies of the template, each of which must fail: the test proves
it can fail.

Debian's python3 with python3-yaml; otherwise the standard library only. Exit 0 when every check
passes, 1 with one line per failure otherwise.
"""

import argparse
import copy
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

# ------------------------------------------------------------------------------------ loading

INTRINSICS = ["Ref", "Condition", "Fn::Sub", "Fn::GetAtt", "Fn::Join", "Fn::Select", "Fn::Split",
              "Fn::If", "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Fn::FindInMap", "Fn::Base64",
              "Fn::GetAZs", "Fn::ImportValue", "Fn::Cidr", "Fn::ToJsonString", "Fn::Length"]


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class CfnLoader(yaml.SafeLoader):
    """A safe loader that turns CloudFormation's short forms (!Ref X, !Sub ..., !GetAtt A.B) into
    their long forms ({"Ref": "X"}, {"Fn::Sub": ...}, {"Fn::GetAtt": ["A", "B"]})."""


def _add_short_form(name):
    tag = "!" + name.replace("Fn::", "")

    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if name == "Fn::GetAtt":
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    CfnLoader.add_constructor(tag, construct)


for _name in INTRINSICS:
    _add_short_form(_name)


def load_template(path):
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=CfnLoader)


# ------------------------------------------------------------------------------------ resolving

ACCOUNT = "123456789012"
REGION = "eu-west-2"
STACK = "epc-import-dev"
PSEUDO = {"AWS::AccountId": ACCOUNT, "AWS::Region": REGION, "AWS::Partition": "aws",
          "AWS::StackName": STACK, "AWS::URLSuffix": "amazonaws.com",
          "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK}/0000"}

# Values for parameters without a Default, by name, then by type.
DUMMY_BY_NAME = {"DatabaseHost": "epc-db.abcdefghij.eu-west-2.rds.amazonaws.com",
                 "DatabasePassword": "dummy-db-password-123"}
DUMMY_BY_TYPE = {"AWS::EC2::KeyPair::KeyName": "epc-import-key",
                 "AWS::EC2::VPC::Id": "vpc-0123456789abcdef0",
                 "List<AWS::EC2::Subnet::Id>": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"],
                 "List<AWS::EC2::SecurityGroup::Id>": ["sg-0123456789abcdef0"],
                 "Number": "1", "String": "dummy"}


class Unresolvable(Exception):
    pass


class Resolver:
    """Evaluates intrinsics with parameter defaults (or dummies) and plausible physical ids."""

    def __init__(self, template):
        self.t = template
        self.params = {}
        for name, p in (template.get("Parameters") or {}).items():
            if "Default" in p:
                value = p["Default"]
                if str(p.get("Type", "")).startswith("List<") or p.get("Type") == "CommaDelimitedList":
                    value = [v.strip() for v in str(value).split(",")]
                else:
                    value = str(value)
            elif name in DUMMY_BY_NAME:
                value = DUMMY_BY_NAME[name]
            else:
                value = DUMMY_BY_TYPE.get(p.get("Type"), "dummy")
            self.params[name] = value
        self.resources = template.get("Resources") or {}

    def physical_name(self, logical, prop):
        props = self.resources[logical].get("Properties") or {}
        return self.resolve(props[prop]) if prop in props else f"{STACK}-{logical}-ABCDEF123456"

    def ref(self, name):
        if name in PSEUDO:
            return PSEUDO[name]
        if name in self.params:
            return self.params[name]
        if name not in self.resources:
            raise Unresolvable(f"Ref to unknown {name}")
        rtype = self.resources[name].get("Type")
        arn = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:{{}}"
        if rtype == "AWS::S3::Bucket":
            props = self.resources[name].get("Properties") or {}
            if "BucketName" in props:
                return self.resolve(props["BucketName"])
            return f"{STACK}-{name.lower()}-1a2b3c4d5e6f"
        if rtype == "AWS::Batch::JobQueue":
            return arn.format("batch", "job-queue/" + self.physical_name(name, "JobQueueName"))
        if rtype == "AWS::Batch::JobDefinition":
            return arn.format("batch", "job-definition/" + self.physical_name(name, "JobDefinitionName") + ":1")
        if rtype == "AWS::Batch::ComputeEnvironment":
            return arn.format("batch", "compute-environment/" + self.physical_name(name, "ComputeEnvironmentName"))
        if rtype == "AWS::SecretsManager::Secret":
            return arn.format("secretsmanager", "secret:" + self.physical_name(name, "Name") + "-AbCdEf")
        if rtype == "AWS::Logs::LogGroup":
            return self.physical_name(name, "LogGroupName")
        if rtype == "AWS::IAM::Role":
            return self.physical_name(name, "RoleName")
        if rtype == "AWS::IAM::InstanceProfile":
            return self.physical_name(name, "InstanceProfileName")
        if rtype == "AWS::ECR::Repository":
            return self.physical_name(name, "RepositoryName")
        if rtype == "AWS::EC2::LaunchTemplate":
            return "lt-0123456789abcdef0"
        if rtype == "AWS::EC2::SecurityGroup":
            return "sg-0123456789abcdef0"
        return f"{STACK}-{name}-ABCDEF123456"

    def get_att(self, name, attr):
        if name not in self.resources:
            raise Unresolvable(f"GetAtt of unknown resource {name}")
        rtype = self.resources[name].get("Type")
        if attr == "Arn":
            if rtype == "AWS::S3::Bucket":
                return "arn:aws:s3:::" + self.ref(name)
            if rtype == "AWS::IAM::Role":
                return f"arn:aws:iam::{ACCOUNT}:role/" + self.ref(name)
            if rtype == "AWS::IAM::InstanceProfile":
                return f"arn:aws:iam::{ACCOUNT}:instance-profile/" + self.ref(name)
            if rtype == "AWS::Logs::LogGroup":
                return f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:" + self.ref(name) + ":*"
        if rtype == "AWS::ECR::Repository" and attr == "RepositoryUri":
            return f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/" + self.ref(name)
        if rtype == "AWS::EC2::LaunchTemplate" and attr in ("LatestVersionNumber", "DefaultVersionNumber"):
            return "1"
        return f"{name}.{attr}"

    def sub(self, text, variables=None):
        variables = variables or {}

        def one(m):
            inner = m.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in variables:
                return str(self.resolve(variables[inner]))
            if "." in inner and inner not in PSEUDO:
                res, attr = inner.split(".", 1)
                return str(self.get_att(res, attr))
            value = self.ref(inner)
            if isinstance(value, list):
                raise Unresolvable(f"${{{inner}}} is a list inside Fn::Sub")
            return str(value)

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, node):
        if isinstance(node, list):
            return [self.resolve(n) for n in node]
        if not isinstance(node, dict):
            if node is None or isinstance(node, (str, bool)):
                return node
            return str(node)  # numbers: CloudFormation passes them on as strings
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                return self.get_att(*arg)
            if key == "Fn::Sub":
                if isinstance(arg, list):
                    return self.sub(arg[0], arg[1])
                return self.sub(arg)
            if key == "Fn::Join":
                return arg[0].join(str(x) for x in self.resolve(arg[1]))
            if key == "Fn::Base64":
                return self.resolve(arg)
            if key == "Fn::Select":
                return self.resolve(arg[1])[int(self.resolve(arg[0]))]
            if key.startswith("Fn::") or key == "Condition":
                raise Unresolvable(f"{key} is not handled by this test; extend Resolver.resolve")
        return {k: self.resolve(v) for k, v in node.items()}


def refs_in(node):
    """Every name a node refers to: Ref, GetAtt, and ${X} / ${X.Attr} inside Fn::Sub."""
    found = set()
    if isinstance(node, list):
        for n in node:
            found |= refs_in(n)
    elif isinstance(node, dict):
        for key, arg in node.items():
            if key == "Ref":
                found.add(arg)
            elif key == "Fn::GetAtt":
                found.add(arg[0])
            elif key == "Fn::Sub":
                text = arg[0] if isinstance(arg, list) else arg
                for m in re.finditer(r"\$\{([^}!][^}]*)\}", text):
                    found.add(m.group(1).split(".", 1)[0])
                if isinstance(arg, list):
                    found |= refs_in(arg[1])
            else:
                found |= refs_in(arg)
    return found


# ------------------------------------------------------------------------------------ constraints

def violates(param, value):
    """What is wrong with `value` for a parameter's constraints, or None: what CloudFormation checks."""
    ptype = param.get("Type", "String")
    if ptype == "Number":
        try:
            number = float(value)
        except ValueError:
            return f"{value!r} is not a number"
        if "MinValue" in param and number < float(param["MinValue"]):
            return f"{value} < MinValue {param['MinValue']}"
        if "MaxValue" in param and number > float(param["MaxValue"]):
            return f"{value} > MaxValue {param['MaxValue']}"
    elif ptype == "String":
        if "MinLength" in param and len(value) < int(param["MinLength"]):
            return f"length {len(value)} < MinLength {param['MinLength']}"
        if "MaxLength" in param and len(value) > int(param["MaxLength"]):
            return f"length {len(value)} > MaxLength {param['MaxLength']}"
        if "AllowedPattern" in param and not re.fullmatch(param["AllowedPattern"], value):
            return f"does not match AllowedPattern {param['AllowedPattern']}"
    if "AllowedValues" in param and str(value) not in [str(v) for v in param["AllowedValues"]]:
        return f"{value!r} not in AllowedValues {param['AllowedValues']}"
    return None


# ------------------------------------------------------------------------------------ the checks

JOB_DEFINITIONS = ["RunJobDefinition", "ShardLoadJobDefinition", "PublishJobDefinition",
                   "ReleaseCheckJobDefinition"]
FIRST_ARG = {"RunJobDefinition": "run", "ShardLoadJobDefinition": "load",
             "PublishJobDefinition": "publish", "ReleaseCheckJobDefinition": "check-release"}
OUTPUTS = ["JobQueueArn", "RunJobDefinitionArn", "ShardLoadJobDefinitionArn", "PublishJobDefinitionArn",
           "ReleaseCheckJobDefinitionArn", "RawBucketName", "FailedBucketName", "RepositoryUri",
           "LogGroupName", "SecretArn"]
SECRET_KEYS = ["EPC_TOKEN", "EPC_API_EMAIL", "EPC_API_KEY", "PGPASSWORD"]
# Variables whose value is a secret: never a plain Environment entry.
SECRET_VARIABLES = set(SECRET_KEYS) | {"EPC_LOGIN_TOKEN", "GOOGLE_API_KEY", "OS_PLACES_API_KEY",
                                       "DATABASE_URL"}
# libpq's environment variables: the binary's --help documents them as "PG..., as libpq reads them".
LIBPQ_VARIABLES = {"PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE",
                   "PGSERVICE", "PGSERVICEFILE", "PGOPTIONS", "PGAPPNAME", "PGSSLMODE", "PGREQUIRESSL",
                   "PGSSLCOMPRESSION", "PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT", "PGSSLCRL",
                   "PGSSLCRLDIR", "PGSSLSNI", "PGREQUIREPEER", "PGSSLMINPROTOCOLVERSION",
                   "PGSSLMAXPROTOCOLVERSION", "PGGSSENCMODE", "PGKRBSRVNAME", "PGGSSLIB",
                   "PGCONNECT_TIMEOUT", "PGCLIENTENCODING", "PGTARGETSESSIONATTRS", "PGLOADBALANCEHOSTS",
                   "PGCHANNELBINDING", "PGDATESTYLE", "PGTZ", "PGGEQO", "PGSYSCONFDIR", "PGLOCALEDIR"}
DRY_RUN_KEYS = {"command", "cert_type", "source", "work_dir", "archive_to", "failed_to", "geocoder",
                "log_format", "report", "shard", "submit"}
# Which --dry-run key shows which option's value.
OPTION_KEYS = {"--source": "source", "--work-dir": "work_dir", "--archive-to": "archive_to",
               "--failed-to": "failed_to", "--geocoder": "geocoder", "--log-format": "log_format",
               "--report": "report", "--jobs": "jobs"}
SUBMIT_KEYS = {"--submit-queue": "queue", "--submit-run-definition": "run_definition",
               "--submit-load-definition": "load_definition",
               "--submit-publish-definition": "publish_definition"}
SHARD_ENV = {"AWS_BATCH_JOB_ARRAY_INDEX": "1", "AWS_BATCH_JOB_ARRAY_SIZE": "3"}


class Checker:
    def __init__(self, template, binary, scratch):
        self.t = template
        self.binary = binary
        self.scratch = scratch
        self.failures = []
        self.r = Resolver(template)
        self.params = template.get("Parameters") or {}
        self.resources = template.get("Resources") or {}
        self.help_text = None

    def fail(self, message):
        self.failures.append(message)

    def expect(self, condition, message):
        if not condition:
            self.fail(message)
        return condition

    def resolve(self, node, where):
        try:
            return self.r.resolve(node)
        except (Unresolvable, KeyError, IndexError, TypeError) as e:
            self.fail(f"{where}: cannot resolve {node!r}: {e}")
            return None

    def of_type(self, rtype):
        return {k: v for k, v in self.resources.items() if v.get("Type") == rtype}

    def props(self, logical):
        return (self.resources.get(logical) or {}).get("Properties") or {}

    # -------------------------------------------------------------- parameters

    def check_parameters(self):
        p = self.params
        required = ["Environment", "KeyPair", "EpcApiToken", "EpcApiEmail", "EpcApiKey", "Source",
                    "DatabaseName", "DatabaseHost", "DatabaseUsername", "DatabasePassword", "VpcId",
                    "SubnetIds", "ImageTag", "Geocoder", "ImportShards", "ScheduleExpression",
                    "RawArchiveGlacierDays"]
        for name in required:
            self.expect(name in p, f"Parameters: {name} is missing")
        if not all(name in p for name in required):
            return
        self.expect(sorted(p["Environment"].get("AllowedValues", [])) == ["dev", "production", "staging"],
                    f"Parameters.Environment: AllowedValues must be dev|staging|production, "
                    f"not {p['Environment'].get('AllowedValues')}")
        self.expect(p["KeyPair"].get("Type") == "AWS::EC2::KeyPair::KeyName",
                    f"Parameters.KeyPair: Type must be AWS::EC2::KeyPair::KeyName, not {p['KeyPair'].get('Type')}")
        self.expect(p["VpcId"].get("Type") == "AWS::EC2::VPC::Id", "Parameters.VpcId: Type must be AWS::EC2::VPC::Id")
        self.expect(p["SubnetIds"].get("Type") == "List<AWS::EC2::Subnet::Id>",
                    "Parameters.SubnetIds: Type must be List<AWS::EC2::Subnet::Id>")
        for name in ["EpcApiToken", "EpcApiEmail", "EpcApiKey", "DatabasePassword"]:
            self.expect(str(p[name].get("NoEcho")).lower() == "true", f"Parameters.{name}: must be NoEcho")
        for name in ["EpcApiEmail", "EpcApiKey", "EpcApiToken"]:
            self.expect(violates(p[name], "") is None,
                        f"Parameters.{name}: may be empty (the other service's credentials), "
                        f"but '' {violates(p[name], '')}")
        pw = p["DatabasePassword"]
        self.expect(str(pw.get("MinLength")) == "10" and str(pw.get("MaxLength")) == "40",
                    f"Parameters.DatabasePassword: the 10-40 character rule needs MinLength 10 and "
                    f"MaxLength 40, not {pw.get('MinLength')}/{pw.get('MaxLength')}")
        self.expect(violates(pw, "a" * 9) is not None, "Parameters.DatabasePassword accepts 9 characters")
        self.expect(violates(pw, "a" * 10) is None, "Parameters.DatabasePassword refuses 10 characters")
        self.expect(violates(pw, "a" * 40) is None, "Parameters.DatabasePassword refuses 40 characters")
        self.expect(violates(pw, "a" * 41) is not None, "Parameters.DatabasePassword accepts 41 characters")
        self.expect("Default" not in pw, "Parameters.DatabasePassword must have no Default")
        self.expect(sorted(p["Source"].get("AllowedValues", [])) == ["current", "legacy"]
                    and p["Source"].get("Default") == "current",
                    "Parameters.Source: AllowedValues current|legacy, Default current")
        for name in ["DatabaseName", "DatabaseHost", "DatabaseUsername"]:
            self.expect("AllowedPattern" in p[name] and "MaxLength" in p[name],
                        f"Parameters.{name}: needs an AllowedPattern and a MaxLength")
        self.expect(violates(p["DatabaseHost"], "db.example.com; rm -rf /") is not None,
                    "Parameters.DatabaseHost accepts a value with spaces and ';'")
        self.expect(str(p["ImageTag"].get("Default")) == "latest", "Parameters.ImageTag: Default must be latest")
        self.expect(str(p["Geocoder"].get("Default")) == "postcodes-io", "Parameters.Geocoder: Default must be postcodes-io")
        shards = p["ImportShards"]
        self.expect(shards.get("Type") == "Number" and str(shards.get("Default")) == "1"
                    and str(shards.get("MinValue")) == "1" and str(shards.get("MaxValue")) == "32",
                    "Parameters.ImportShards: Number, Default 1, MinValue 1, MaxValue 32")
        self.expect(p["RawArchiveGlacierDays"].get("Type") == "Number", "Parameters.RawArchiveGlacierDays: Number")
        # Every default (and every dummy this test uses) satisfies the parameter's own constraints.
        for name, param in p.items():
            value = self.r.params[name]
            if isinstance(value, list):
                continue
            problem = violates(param, value)
            self.expect(problem is None, f"Parameters.{name}: "
                        f"{'Default' if 'Default' in param else 'test value'} {value!r}: {problem}")
        # Secret parameters go into the secret and nowhere else.
        secret_params = {n for n, v in p.items() if str(v.get("NoEcho")).lower() == "true"}
        for logical, res in self.resources.items():
            leaked = refs_in(res) & secret_params
            if res.get("Type") != "AWS::SecretsManager::Secret":
                self.expect(not leaked, f"Resources.{logical} uses NoEcho parameter(s) {sorted(leaked)}: "
                            "only the secret may hold them")
        leaked = refs_in(self.t.get("Outputs") or {}) & secret_params
        self.expect(not leaked, f"Outputs use NoEcho parameter(s) {sorted(leaked)}")

    # -------------------------------------------------------------- the secret

    def secret_logical(self):
        secrets = self.of_type("AWS::SecretsManager::Secret")
        if not self.expect(len(secrets) == 1, f"Resources: exactly one AWS::SecretsManager::Secret, not {len(secrets)}"):
            return None
        logical = next(iter(secrets))
        text = self.resolve(self.props(logical).get("SecretString"), f"Resources.{logical}.SecretString")
        try:
            keys = sorted(json.loads(text)) if text else []
        except ValueError as e:
            self.fail(f"Resources.{logical}.SecretString is not JSON with the test values: {e}")
            keys = []
        self.expect(keys == sorted(SECRET_KEYS), f"Resources.{logical}.SecretString keys must be {SECRET_KEYS}, not {keys}")
        return logical

    # -------------------------------------------------------------- --help

    def documented_variables(self):
        if self.help_text is None:
            proc = subprocess.run([self.binary, "--help"], capture_output=True, text=True, timeout=60)
            self.help_text = proc.stdout + proc.stderr
            self.expect(proc.returncode == 0, f"{self.binary} --help exited {proc.returncode}")
        names = set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b|\bPG[A-Z]+\b", self.help_text))
        if re.search(r"as libpq reads them", self.help_text):
            names |= LIBPQ_VARIABLES
        return names

    # -------------------------------------------------------------- job definitions

    def policy_allows(self, role_logical, action, resource):
        """Does the role's inline policy allow action on resource (both resolved strings)?"""
        for policy in self.props(role_logical).get("Policies") or []:
            for st in policy.get("PolicyDocument", {}).get("Statement", []):
                if st.get("Effect") != "Allow":
                    continue
                actions = st.get("Action")
                actions = actions if isinstance(actions, list) else [actions]
                resources = self.resolve(st.get("Resource"), f"Resources.{role_logical} policy")
                resources = resources if isinstance(resources, list) else [resources]
                if any(fnmatch.fnmatchcase(action, a) for a in actions) and \
                        any(isinstance(r, str) and fnmatch.fnmatchcase(resource, r) for r in resources):
                    return True
        return False

    def role_of(self, node):
        """The logical id of the role a !GetAtt Role.Arn names, or None."""
        if isinstance(node, dict) and "Fn::GetAtt" in node:
            return node["Fn::GetAtt"][0]
        return None

    def check_retry(self, where, strategy):
        self.expect(str(strategy.get("Attempts")) == "3", f"{where}.RetryStrategy.Attempts must be 3, not {strategy.get('Attempts')}")
        rules = strategy.get("EvaluateOnExit") or []
        if not self.expect(rules, f"{where}.RetryStrategy.EvaluateOnExit is missing"):
            return
        # Batch takes the first rule all of whose given conditions match (glob patterns).
        def action(code, reason="", status="Essential container in task exited"):
            for rule in rules:
                conditions = [("OnExitCode", str(code) if code is not None else None),
                              ("OnReason", reason), ("OnStatusReason", status)]
                if all(value is not None and fnmatch.fnmatchcase(value, str(rule[key]))
                       for key, value in conditions if key in rule):
                    if any(key in rule for key, _ in conditions):
                        return str(rule.get("Action", "")).upper()
            return "RETRY"  # no rule matched: Batch retries up to Attempts
        retried = [code for code in range(0, 256) if action(code) == "RETRY"]
        self.expect(retried == [4, 5], f"{where}.RetryStrategy retries exit codes {retried}; it must retry exactly 4 "
                    "(lock held) and 5 (transient)")
        self.expect(action(None, reason="CannotPullContainerError: access denied", status="Task failed to start")
                    == "EXIT", f"{where}.RetryStrategy must end with a catch-all EXIT (e.g. OnReason '*')")

    def dry_run(self, where, argv, env):
        proc = subprocess.run([self.binary] + argv + ["--dry-run"], env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        shown = " ".join(argv)
        if not self.expect(proc.returncode == 0, f"{where}: `epc-import {shown} --dry-run` exited {proc.returncode}: "
                           f"{proc.stderr.strip()[-500:]}"):
            return None
        try:
            config = json.loads(proc.stdout)
        except ValueError as e:
            self.fail(f"{where}: --dry-run printed no JSON object on stdout ({e}): {proc.stdout[:300]!r}")
            return None
        for value in env.values():
            if value.startswith("dummy-secret-"):
                self.expect(value not in proc.stdout + proc.stderr, f"{where}: --dry-run printed a secret's value")
        if not self.expect(isinstance(config, dict), f"{where}: --dry-run printed {type(config).__name__}, not an object"):
            return None
        missing = DRY_RUN_KEYS - set(config)
        self.expect(not missing, f"{where}: --dry-run JSON lacks {sorted(missing)}")
        return config

    def check_job_definition(self, logical, secret_logical, documented):
        where = f"Resources.{logical}"
        res = self.resources.get(logical)
        if not self.expect(res and res.get("Type") == "AWS::Batch::JobDefinition",
                           f"{where}: missing, or not an AWS::Batch::JobDefinition"):
            return
        props = res.get("Properties") or {}
        cp = props.get("ContainerProperties") or {}
        parameters = self.resolve(props.get("Parameters") or {}, f"{where}.Parameters") or {}
        self.expect(parameters.get("certtype") == "domestic",
                    f"{where}.Parameters.certtype must default to domestic, not {parameters.get('certtype')!r}")
        self.check_retry(where, props.get("RetryStrategy") or {})
        self.expect("AttemptDurationSeconds" in (props.get("Timeout") or {}), f"{where}: needs Timeout.AttemptDurationSeconds")
        image = self.resolve(cp.get("Image"), f"{where}.Image")
        self.expect(image == f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/epc-import-dev:latest",
                    f"{where}.ContainerProperties.Image resolves to {image!r}, not the stack's repository at ImageTag")
        log = cp.get("LogConfiguration") or {}
        self.expect(log.get("LogDriver") == "awslogs" and refs_in((log.get("Options") or {}).get("awslogs-group")) ==
                    set(self.of_type("AWS::Logs::LogGroup")),
                    f"{where}: LogConfiguration must be awslogs into the stack's log group")

        # The environment: names the binary documents, no secret in plain text, secrets from the secret.
        environment = cp.get("Environment") or []
        secrets = cp.get("Secrets") or []
        env = {"PATH": f"{self.scratch}/bin:/usr/bin:/bin", "HOME": self.scratch, "LANG": "C.UTF-8"}
        secret_params = {n for n, v in self.params.items() if str(v.get("NoEcho")).lower() == "true"}
        for entry in environment:
            name = entry.get("Name")
            self.expect(name in documented, f"{where}: Environment {name} is not documented in `epc-import --help`")
            self.expect(name not in SECRET_VARIABLES, f"{where}: {name} holds a secret: it must come from Secrets, "
                        "not a plain Environment entry")
            self.expect(not (refs_in(entry.get("Value")) & secret_params),
                        f"{where}: Environment {name} takes a NoEcho parameter")
            value = self.resolve(entry.get("Value"), f"{where}.Environment.{name}")
            env[name] = str(value)
        names = {e.get("Name") for e in environment}
        for name in ["PGHOST", "PGDATABASE", "PGUSER"]:
            self.expect(name in names, f"{where}: Environment lacks {name}")
        self.expect(env.get("PGSSLMODE") == "require", f"{where}: Environment PGSSLMODE must be require")
        for entry in secrets:
            name = entry.get("Name")
            self.expect(name in documented, f"{where}: Secrets {name} is not documented in `epc-import --help`")
            value_from = entry.get("ValueFrom")
            expected = {"Fn::Sub": "${%s}:%s::" % (secret_logical, name)}
            self.expect(value_from == expected, f"{where}: Secrets {name} must be ValueFrom !Sub \"${{{secret_logical}}}:{name}::\" "
                        f"(the stack's secret, JSON key {name}), not {value_from!r}")
            self.expect(name not in names, f"{where}: {name} is both in Environment and Secrets")
            env[name] = f"dummy-secret-{name}"
        self.expect("PGPASSWORD" in {s.get("Name") for s in secrets}, f"{where}: Secrets lacks PGPASSWORD")
        if secrets:
            role = self.role_of(cp.get("ExecutionRoleArn"))
            self.expect(role and self.policy_allows(role, "secretsmanager:GetSecretValue", self.r.ref(secret_logical)),
                        f"{where}: ExecutionRoleArn must be a role allowed secretsmanager:GetSecretValue on the secret")

        # The command, as Batch will run it.
        command = cp.get("Command")
        if not self.expect(isinstance(command, list) and command, f"{where}: Command must be a non-empty list"):
            return
        self.expect(command[0] == FIRST_ARG[logical], f"{where}: Command must start with {FIRST_ARG[logical]}, "
                    f"not {command[0]!r} (the image's ENTRYPOINT is epc-import)")
        argv = []
        for i, element in enumerate(command):
            value = self.resolve(element, f"{where}.Command[{i}]")
            if not isinstance(value, str):
                self.fail(f"{where}.Command[{i}] resolves to {value!r}, not a string")
                return
            if "Ref::" in value:
                m = re.fullmatch(r"Ref::([A-Za-z0-9_]+)", value)
                if not self.expect(m, f"{where}.Command[{i}] {value!r}: a Ref:: placeholder must be a whole "
                                   "element (Batch substitutes whole placeholders)"):
                    return
                if not self.expect(m.group(1) in parameters, f"{where}.Command[{i}] {value!r} has no default in "
                                   "the job definition's Parameters"):
                    return
                value = str(parameters[m.group(1)])
            argv.append(value)

        # Paths under the job's mounted volume point into a scratch directory standing for the host
        # volume, fresh as on a new instance: the mount point exists, nothing under it does.
        mounts = {m.get("ContainerPath"): m.get("SourceVolume") for m in cp.get("MountPoints") or []}
        volumes = {v.get("Name"): (v.get("Host") or {}).get("SourcePath") for v in cp.get("Volumes") or []}
        host_argv = list(argv)
        for i, value in enumerate(argv):
            if value.startswith("/"):
                mount = next((m for m in mounts if value == m or value.startswith(m.rstrip("/") + "/")), None)
                if not self.expect(mount and volumes.get(mounts[mount]), f"{where}: path {value} is not under a "
                                   "mounted host volume: it would be lost with the container"):
                    return
                volume_dir = os.path.join(self.scratch, "volume-" + mounts[mount])
                os.makedirs(volume_dir, exist_ok=True)
                host_argv[i] = volume_dir + value[len(mount.rstrip("/")):]
        if logical == "ShardLoadJobDefinition":
            env.update(SHARD_ENV)
            for name in SHARD_ENV:
                self.expect(name in documented, f"`epc-import --help` does not document {name}, which the shard job relies on")

        config = self.dry_run(where, host_argv, env)
        if config is None:
            return
        if os.path.exists(os.path.join(self.scratch, "aws-called")):
            self.fail(f"{where}: --dry-run ran the AWS CLI")
        self.expect(config.get("command") == argv[0], f"{where}: --dry-run command is {config.get('command')!r}, not {argv[0]!r}")
        self.expect(config.get("cert_type") == "domestic", f"{where}: --dry-run cert_type is {config.get('cert_type')!r}, not domestic")
        options = dict(zip(host_argv, host_argv[1:]))
        for option, key in OPTION_KEYS.items():
            if option in options:
                self.expect(str(config.get(key)) == options[option], f"{where}: --dry-run {key} is {config.get(key)!r}, "
                            f"not {options[option]!r} as given by {option}")
        self.expect(config.get("log_format") == "json", f"{where}: jobs log JSON (--log-format json) for CloudWatch")
        if logical in ("RunJobDefinition", "ShardLoadJobDefinition"):
            raw = self.r.ref("RawArchiveBucket") if "RawArchiveBucket" in self.resources else None
            failed = self.r.ref("FailedArchiveBucket") if "FailedArchiveBucket" in self.resources else None
            archive_to, failed_to = str(config.get("archive_to")), str(config.get("failed_to"))
            self.expect(raw and archive_to.startswith(f"s3://{raw}/"),
                        f"{where}: --archive-to is {archive_to!r}, not s3://<RawArchiveBucket>/PREFIX")
            self.expect(failed and failed_to.startswith(f"s3://{failed}/"),
                        f"{where}: --failed-to is {failed_to!r}, not s3://<FailedArchiveBucket>/PREFIX")
            role = self.role_of(cp.get("JobRoleArn"))
            for url in (archive_to, failed_to):
                if url.startswith("s3://"):
                    bucket, _, key = url[5:].partition("/")
                    self.expect(role and self.policy_allows(role, "s3:PutObject", f"arn:aws:s3:::{bucket}/{key}/x.zip"),
                                f"{where}: the job role may not s3:PutObject to {url}")
        if logical in ("RunJobDefinition", "ShardLoadJobDefinition"):
            # A container sees every core of the host: the loader's connections follow the job's vCPUs.
            vcpus = next((r.get("Value") for r in cp.get("ResourceRequirements") or [] if r.get("Type") == "VCPU"), None)
            self.expect(vcpus is not None and str(config.get("jobs")) == str(self.resolve(vcpus, where)),
                        f"{where}: --jobs must be the job's vCPUs (--jobs !Ref JobVcpus), not {config.get('jobs')!r}")
        if logical in ("RunJobDefinition", "PublishJobDefinition"):
            self.expect(config.get("geocoder") == self.r.params.get("Geocoder"),
                        f"{where}: --dry-run geocoder is {config.get('geocoder')!r}, not the Geocoder parameter's default")
        if logical == "ShardLoadJobDefinition":
            self.expect(config.get("shard") == {"index": 1, "count": 3}, f"{where}: with AWS_BATCH_JOB_ARRAY_INDEX=1 "
                        f"and AWS_BATCH_JOB_ARRAY_SIZE=3 --dry-run shard is {config.get('shard')!r}, not index 1 of 3")
        else:
            self.expect(config.get("shard") is None, f"{where}: --dry-run shard is {config.get('shard')!r}, not null")
        if logical == "ReleaseCheckJobDefinition":
            submit = config.get("submit")
            if self.expect(isinstance(submit, dict), f"{where}: --dry-run submit is {submit!r}, not an object"):
                for option, key in SUBMIT_KEYS.items():
                    self.expect(option in options and submit.get(key) == options[option],
                                f"{where}: --dry-run submit.{key} is {submit.get(key)!r}, not {options.get(option)!r}")
                self.expect(submit.get("queue") == self.r.ref("JobQueue"), f"{where}: submit.queue is not the stack's JobQueue")
                for option, target in [("--submit-run-definition", "RunJobDefinition"),
                                       ("--submit-load-definition", "ShardLoadJobDefinition"),
                                       ("--submit-publish-definition", "PublishJobDefinition")]:
                    self.expect(options.get(option) == self.r.ref(target), f"{where}: {option} is not {target}'s ARN")
                self.expect(str(submit.get("shards")) == str(self.r.params.get("ImportShards")),
                            f"{where}: submit.shards is {submit.get('shards')!r}, not the ImportShards default")
                role = self.role_of(cp.get("JobRoleArn"))
                for arn in [submit.get("queue"), submit.get("run_definition"), submit.get("load_definition"),
                            submit.get("publish_definition")]:
                    self.expect(role and self.policy_allows(role, "batch:SubmitJob", str(arn)),
                                f"{where}: the job role may not batch:SubmitJob on {arn}")
        else:
            self.expect(config.get("submit") is None, f"{where}: --dry-run submit is {config.get('submit')!r}, not null")

    # -------------------------------------------------------------- the rest

    def check_roles(self, secret_logical):
        for logical, res in self.of_type("AWS::IAM::Role").items():
            for policy in res.get("Properties", {}).get("Policies") or []:
                for st in policy.get("PolicyDocument", {}).get("Statement", []):
                    if st.get("Effect") != "Allow":
                        continue
                    actions = st.get("Action")
                    actions = actions if isinstance(actions, list) else [actions]
                    resources = st.get("Resource")
                    resources = resources if isinstance(resources, list) else [resources]
                    for a in actions:
                        self.expect("*" not in str(a), f"Resources.{logical}: action {a} is a wildcard (least privilege)")
                    for r in resources:
                        self.expect(r != "*", f"Resources.{logical}: Resource '*' (least privilege)")
        allowed = {"ExecutionRole": {"secretsmanager:GetSecretValue", "logs:CreateLogStream", "logs:PutLogEvents"},
                   "ImportJobRole": {"s3:PutObject", "s3:GetObject", "s3:ListBucket"},
                   "ReleaseCheckJobRole": {"batch:SubmitJob"}, "ScheduleRole": {"batch:SubmitJob"}}
        for logical, permitted in allowed.items():
            if not self.expect(logical in self.resources, f"Resources.{logical} is missing"):
                continue
            actions = set()
            for policy in self.props(logical).get("Policies") or []:
                for st in policy.get("PolicyDocument", {}).get("Statement", []):
                    a = st.get("Action")
                    actions |= set(a if isinstance(a, list) else [a])
            self.expect(actions <= permitted, f"Resources.{logical} allows {sorted(actions - permitted)} beyond {sorted(permitted)}")
        if secret_logical and "ExecutionRole" in self.resources:
            self.expect(self.policy_allows("ExecutionRole", "secretsmanager:GetSecretValue", self.r.ref(secret_logical))
                        and not self.policy_allows("ExecutionRole", "secretsmanager:GetSecretValue",
                                                   f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:other-AbCdEf"),
                        "Resources.ExecutionRole: secretsmanager:GetSecretValue on this stack's secret only")
        managed = [str(self.resolve(m, "InstanceRole")) for m in self.props("InstanceRole").get("ManagedPolicyArns") or []]
        self.expect(any(m.endswith("/AmazonEC2ContainerServiceforEC2Role") for m in managed),
                    "Resources.InstanceRole needs the AmazonEC2ContainerServiceforEC2Role managed policy")

    def check_compute(self):
        ce = self.of_type("AWS::Batch::ComputeEnvironment")
        if not self.expect(len(ce) == 1, "Resources: one AWS::Batch::ComputeEnvironment"):
            return
        props = next(iter(ce.values())).get("Properties") or {}
        cr = props.get("ComputeResources") or {}
        self.expect(props.get("Type") == "MANAGED" and cr.get("Type") == "EC2", "ComputeEnvironment: MANAGED, EC2")
        self.expect(cr.get("Ec2KeyPair") == {"Ref": "KeyPair"}, "ComputeEnvironment: Ec2KeyPair must be !Ref KeyPair")
        lt_ref = (cr.get("LaunchTemplate") or {}).get("LaunchTemplateId")
        lt = self.props(lt_ref.get("Ref")) if isinstance(lt_ref, dict) and "Ref" in lt_ref else {}
        disks = (lt.get("LaunchTemplateData") or {}).get("BlockDeviceMappings") or []
        root = next((d.get("Ebs") or {} for d in disks if d.get("DeviceName") == "/dev/xvda"), {})
        size = self.resolve(root.get("VolumeSize"), "LaunchTemplate VolumeSize")
        self.expect(size is not None and int(size) >= 80 and root.get("VolumeType") == "gp3"
                    and str(root.get("Encrypted")).lower() == "true",
                    f"ComputeEnvironment's launch template: root volume /dev/xvda must be encrypted gp3 of >= 80 GiB "
                    f"(the ~40 GB work dir and images), not {root}")
        # The host directory mounted at /data belongs to the image's user.
        dockerfile = os.path.join(REPO_ROOT, "docker", "Dockerfile")
        users = re.findall(r"^USER\s+(\d+)", open(dockerfile).read(), re.M) if os.path.exists(dockerfile) else []
        user_data = str(self.resolve((lt.get("LaunchTemplateData") or {}).get("UserData"), "LaunchTemplate UserData"))
        self.expect(bool(users) and f"chown {users[-1]}:{users[-1]} /var/lib/epc-import" in user_data,
                    f"LaunchTemplate UserData must give /var/lib/epc-import to the image's user "
                    f"(USER {users[-1] if users else '?'} in docker/Dockerfile)")
        queues = self.of_type("AWS::Batch::JobQueue")
        self.expect(len(queues) == 1, "Resources: one AWS::Batch::JobQueue")
        repo = self.props("Repository")
        self.expect(self.resolve(repo.get("RepositoryName"), "Repository") == "epc-import-dev",
                    "Resources.Repository: RepositoryName must be epc-import-${Environment}")
        self.expect(str((repo.get("ImageScanningConfiguration") or {}).get("ScanOnPush")).lower() == "true",
                    "Resources.Repository: ScanOnPush")
        text = self.resolve((repo.get("LifecyclePolicy") or {}).get("LifecyclePolicyText"), "Repository lifecycle")
        try:
            rules = json.loads(text or "").get("rules", [])
        except ValueError:
            rules = []
        self.expect(any(r.get("selection", {}).get("countType") == "imageCountMoreThan" for r in rules),
                    "Resources.Repository: a lifecycle rule keeping the last N images (imageCountMoreThan)")

    def check_buckets(self):
        buckets = self.of_type("AWS::S3::Bucket")
        self.expect({"RawArchiveBucket", "FailedArchiveBucket"} <= set(buckets),
                    f"Resources: RawArchiveBucket and FailedArchiveBucket, not {sorted(buckets)}")
        for logical, res in buckets.items():
            props = res.get("Properties") or {}
            pab = props.get("PublicAccessBlockConfiguration") or {}
            for key in ["BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"]:
                self.expect(str(pab.get(key)).lower() == "true", f"Resources.{logical}: PublicAccessBlockConfiguration.{key} must be true")
            self.expect((props.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration"),
                        f"Resources.{logical}: needs BucketEncryption")
            rules = (props.get("LifecycleConfiguration") or {}).get("Rules") or []
            glacier = [t for r in rules if r.get("Status") == "Enabled" for t in r.get("Transitions") or []
                       if t.get("StorageClass") == "GLACIER" and "TransitionInDays" in t]
            self.expect(glacier, f"Resources.{logical}: needs an enabled lifecycle rule transitioning to GLACIER after N days")

    def check_schedule(self):
        rules = self.of_type("AWS::Events::Rule")
        schedules = self.of_type("AWS::Scheduler::Schedule")
        if not self.expect(rules or schedules, "Resources: no AWS::Events::Rule or AWS::Scheduler::Schedule submits the release check"):
            return
        check_arn = self.r.ref("ReleaseCheckJobDefinition") if "ReleaseCheckJobDefinition" in self.resources else None
        for logical, res in rules.items():
            props = res.get("Properties") or {}
            self.expect(props.get("ScheduleExpression") == {"Ref": "ScheduleExpression"},
                        f"Resources.{logical}: ScheduleExpression must be !Ref ScheduleExpression")
            targets = props.get("Targets") or []
            self.expect(targets, f"Resources.{logical}: no Targets")
            for target in targets:
                tw = f"Resources.{logical} target {target.get('Id')}"
                bp = target.get("BatchParameters") or {}
                self.expect(self.resolve(bp.get("JobDefinition"), tw) == check_arn,
                            f"{tw}: BatchParameters.JobDefinition must be the ReleaseCheckJobDefinition")
                self.expect(target.get("Arn") == {"Ref": "JobQueue"}, f"{tw}: Arn must be the JobQueue")
                role = self.role_of(target.get("RoleArn"))
                self.expect(role and self.policy_allows(role, "batch:SubmitJob", str(check_arn))
                            and self.policy_allows(role, "batch:SubmitJob", self.r.ref("JobQueue")),
                            f"{tw}: RoleArn must be a role allowed batch:SubmitJob on the queue and the check job")
                if "Input" in target:
                    try:
                        certtype = json.loads(target["Input"]).get("Parameters", {}).get("certtype")
                    except ValueError:
                        certtype = "(Input is not JSON)"
                    self.expect(certtype in ("domestic", "non-domestic", "display"),
                                f"{tw}: Input Parameters.certtype is {certtype!r}")
        for logical, res in schedules.items():
            target = (res.get("Properties") or {}).get("Target") or {}
            self.expect("ReleaseCheckJobDefinition" in refs_in(target), f"Resources.{logical}: must submit the ReleaseCheckJobDefinition")

    def check_outputs(self):
        outputs = self.t.get("Outputs") or {}
        for name in OUTPUTS:
            self.expect(name in outputs, f"Outputs: {name} is missing")
        for name, target in [("JobQueueArn", "JobQueue"), ("RunJobDefinitionArn", "RunJobDefinition"),
                             ("ShardLoadJobDefinitionArn", "ShardLoadJobDefinition"),
                             ("PublishJobDefinitionArn", "PublishJobDefinition"),
                             ("ReleaseCheckJobDefinitionArn", "ReleaseCheckJobDefinition"),
                             ("RawBucketName", "RawArchiveBucket"), ("FailedBucketName", "FailedArchiveBucket"),
                             ("SecretArn", "Secret")]:
            if name in outputs:
                self.expect(outputs[name].get("Value") == {"Ref": target}, f"Outputs.{name} must be !Ref {target}")
        if "RepositoryUri" in outputs:
            self.expect(outputs["RepositoryUri"].get("Value") == {"Fn::GetAtt": ["Repository", "RepositoryUri"]},
                        "Outputs.RepositoryUri must be !GetAtt Repository.RepositoryUri")
        logs = self.of_type("AWS::Logs::LogGroup")
        self.expect(len(logs) == 1 and all("RetentionInDays" in (v.get("Properties") or {}) for v in logs.values()),
                    "Resources: one AWS::Logs::LogGroup with RetentionInDays")

    def run(self):
        self.check_parameters()
        secret_logical = self.secret_logical()
        documented = self.documented_variables()
        for logical in JOB_DEFINITIONS:
            self.check_job_definition(logical, secret_logical, documented)
        self.check_roles(secret_logical)
        self.check_compute()
        self.check_buckets()
        self.check_schedule()
        self.check_outputs()
        return self.failures


def check(template, binary):
    scratch = tempfile.mkdtemp(prefix="epc-cfn-test-")
    try:
        # The image has the AWS CLI (s3:// locations and submissions go through it); --dry-run must
        # find it on PATH but never run it.
        os.makedirs(os.path.join(scratch, "bin"))
        stub = os.path.join(scratch, "bin", "aws")
        with open(stub, "w") as f:
            f.write(f"#!/bin/sh\ntouch '{scratch}/aws-called'\nexit 99\n")
        os.chmod(stub, 0o755)
        return Checker(template, binary, scratch).run()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ------------------------------------------------------------------------------------ negative controls

def broken_copies(template):
    """(description, expected failure text, broken template): each must fail the checks."""
    def mutate(description, expect, change):
        t = copy.deepcopy(template)
        change(t["Resources"])
        return description, expect, t

    def unknown_option(r):
        r["RunJobDefinition"]["Properties"]["ContainerProperties"]["Command"].insert(1, "--no-such-option")

    def password_in_environment(r):
        cp = r["ShardLoadJobDefinition"]["Properties"]["ContainerProperties"]
        cp["Secrets"] = [s for s in cp["Secrets"] if s["Name"] != "PGPASSWORD"]
        cp["Environment"].append({"Name": "PGPASSWORD", "Value": {"Ref": "DatabasePassword"}})

    def retry_everything(r):
        r["PublishJobDefinition"]["Properties"]["RetryStrategy"]["EvaluateOnExit"].insert(
            0, {"OnExitCode": "*", "Action": "RETRY"})

    def placeholder_without_default(r):
        del r["ReleaseCheckJobDefinition"]["Properties"]["Parameters"]["shards"]

    def undocumented_variable(r):
        r["RunJobDefinition"]["Properties"]["ContainerProperties"]["Environment"].append(
            {"Name": "EPC_NO_SUCH_VARIABLE", "Value": "1"})

    def bad_source(r):
        cmd = r["ShardLoadJobDefinition"]["Properties"]["ContainerProperties"]["Command"]
        cmd[cmd.index("--source") + 1] = "newest"

    return [mutate("an unknown option in the run command", "RunJobDefinition: `epc-import run --no-such-option", unknown_option),
            mutate("PGPASSWORD as a plain environment entry", "ShardLoadJobDefinition: PGPASSWORD holds a secret",
                   password_in_environment),
            mutate("a retry on every exit code", "PublishJobDefinition.RetryStrategy retries exit codes", retry_everything),
            mutate("a Ref:: placeholder without a default", "Ref::shards' has no default", placeholder_without_default),
            mutate("an environment variable the binary does not know", "EPC_NO_SUCH_VARIABLE is not documented",
                   undocumented_variable),
            mutate("--source newest", "ShardLoadJobDefinition: `epc-import load", bad_source)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", required=True, help="the epc-import binary")
    ap.add_argument("--template", required=True, help="cloudformation.yaml")
    args = ap.parse_args()
    binary = os.path.abspath(args.binary)
    if not os.access(binary, os.X_OK):
        print(f"FAIL: {binary} is not an executable", file=sys.stderr)
        return 1
    template = load_template(args.template)

    passed = failed = 0
    failures = check(template, binary)
    for f in failures:
        print(f"FAIL: {f}")
    if failures:
        failed += 1
    else:
        passed += 1
        print(f"ok: {args.template} is consistent with {binary}")

    for description, expected, broken in broken_copies(template):
        found = check(broken, binary)
        if any(expected in f for f in found):
            passed += 1
            print(f"ok: negative control ({description}) is caught")
        else:
            failed += 1
            print(f"FAIL: negative control ({description}) was not caught as expected ({expected!r}); "
                  f"its failures: {found}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
