"""The YAML configuration: where it is found, how it is checked, the typed settings.

Lookup order: ``--config PATH``, then ``$PIPELINE_CONFIG``, then ``./pipeline.yaml``.
The file passes :func:`pipeline.core.inputs.read_text` (a regular, non-empty UTF-8 file)
and a YAML loader that refuses duplicate keys. Structure is checked with a JSON schema
(integers are integers: ``110.0`` and ``"110"`` are refused), meaning by hand in
:func:`config_problems`: CIDRs and the DNS IP, the cluster endpoint (https with a host)
and CA (base64 of a PEM certificate), kubelet arguments that shell-split, taints,
every region against botocore's partition data, KMS key forms, references between
sections, Karpenter template rules that need no AWS call, output folders that are
files. That one function is everything publish, distribute, bake and rebuild would
refuse later from the file alone; ``check-config`` and every task that loads the file
run it. Every problem becomes one line ``FILE: key.path: expected ...`` and all of
them are raised together as one :class:`~pipeline.core.errors.ConfigError` (exit 2).
Relative paths in the file are relative to the file's folder.
"""
from __future__ import annotations

import base64
import binascii
import difflib
import functools
import importlib.util
import ipaddress
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from pipeline.core.errors import ConfigError, InputError
from pipeline.core.inputs import MiB, read_text
from pipeline.core.naming import AMI_ID_PATTERN, IMAGE_NAME_PATTERN, is_image_name

__all__ = [
    "AwsSettings",
    "ClusterSettings",
    "BaseImage",
    "BakeSettings",
    "ImportSettings",
    "ImageSettings",
    "UserDataSettings",
    "LaunchTemplateSettings",
    "KarpenterSettings",
    "ChannelSettings",
    "HealthRequirement",
    "LimitsSettings",
    "soak_seconds",
    "Settings",
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_CHANNEL",
    "DEFAULT_INSTANCE_TYPES",
    "CONFIG_ENV",
    "find_config",
    "load_settings",
    "parse_settings",
    "config_problems",
    "known_regions",
    "region_problem",
    "ca_problem",
    "endpoint_problem",
    "dns_problem",
    "kms_key_problem",
]

_T = TypeVar("_T")

DEFAULT_CONFIG_NAME = "pipeline.yaml"
#: The channel a launch template follows when ``launch_templates[].channel`` is not set.
DEFAULT_CHANNEL = "candidate"
#: The build instance when ``bake.instance_type`` is not set: the image's architecture picks
#: it (arm64 builds on Graviton; an x86_64 type cannot boot an arm64 AMI).
DEFAULT_INSTANCE_TYPES = {"x86_64": "m5.large", "arm64": "m6g.large"}
CONFIG_ENV = "PIPELINE_CONFIG"
ENDPOINT_ENV = "AWS_ENDPOINT_URL"
#: The Packer template that ships with the package; a bake without ``bake.template`` uses it
#: (``eks-ami init`` copies it for customising).
PACKAGED_TEMPLATE = Path(__file__).resolve().parents[1] / "data" / "packer" / "eks-node"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class AwsSettings:
    """Where and how to call AWS. Precedence, first found wins (see :func:`_apply_env`):

    - region: ``--region``; ``aws.region`` in the config; ``$AWS_REGION``;
      ``$AWS_DEFAULT_REGION``; the profile's ``region`` in ``~/.aws/config``
      (``$AWS_CONFIG_FILE``); ``us-east-1``. ``region_from`` names the winner.
    - profile: ``--profile``; ``aws.profile``; ``$AWS_PROFILE``; none (the SDK's chain).
    - endpoint: ``$AWS_ENDPOINT_URL``; ``aws.endpoint_url``; the profile's ``endpoint_url``
      and the SDK's other sources (botocore applies those itself). The environment wins
      here so that one config can be pointed at the local emulator or a proxy.
    """

    region: str = "us-east-1"
    profile: str | None = None
    endpoint_url: str | None = None
    retry_mode: str = "standard"
    max_attempts: int = 5
    region_from: str = "default"


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    name: str
    kubernetes_version: str
    endpoint: str | None = None
    certificate_authority: str | None = None
    service_cidr: str = "10.100.0.0/16"
    dns_cluster_ip: str | None = None

    @property
    def cluster_dns_ip(self) -> str:
        """The cluster DNS IP: configured, or the .10 address of the service CIDR."""
        if self.dns_cluster_ip:
            return self.dns_cluster_ip
        net = ipaddress.ip_network(self.service_cidr, strict=False)
        return str(net.network_address + 10)


@dataclass(frozen=True, slots=True)
class BaseImage:
    """Where a bake starts: exactly one of the three ways is set."""

    ssm_parameter: str | None = None
    ami_id: str | None = None
    name_filter: str | None = None
    owners: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BakeSettings:
    template: Path
    base: BaseImage
    instance_type: str = DEFAULT_INSTANCE_TYPES["x86_64"]
    var_files: tuple[Path, ...] = ()
    variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImportSettings:
    source: Path
    method: str = "vm-import"
    bucket: str | None = None
    kms_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class HealthRequirement:
    """What a channel's AMI must show before the next channel takes it (issue 19).

    ``min_instances``: at least this many instances launched from the AMI during the
    soak must be running now; ``status_checks``: each of them must pass both EC2 status
    checks (DescribeInstanceStatus: instance and system status ``ok``).
    """

    min_instances: int = 1
    status_checks: bool = True


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """One stage of an image's release train (``images[].channels``, in order).

    The first channel is where rebuild publishes; each later one takes the AMI of the
    channel before it once that AMI has been there for ``soak_seconds``.
    """

    name: str
    soak_seconds: float = 0.0
    auto_promote: bool = False
    health: HealthRequirement | None = None


@dataclass(frozen=True, slots=True)
class LimitsSettings:
    """Overrides of the AWS quotas in :mod:`pipeline.aws.limits` (None: the documented value)."""

    copy_image_per_region: int | None = None
    import_image_per_region: int | None = None
    put_snapshot_block_per_snapshot: int | None = None
    region_workers: int | None = None


@dataclass(frozen=True, slots=True)
class ImageSettings:
    name: str
    require: str = "any"
    architecture: str = "x86_64"
    boot_mode: str = "legacy-bios"
    regions: tuple[str, ...] = ()
    share_with: tuple[str, ...] = ()
    kms_key_ids: dict[str, str] = field(default_factory=dict)
    max_age_days: int = 30
    bake: BakeSettings | None = None
    import_: ImportSettings | None = None
    channels: tuple[ChannelSettings, ...] = ()
    #: verify's runtime and image-hygiene findings fail the image (``verify --strict``)
    verify_strict: bool = False

    @property
    def method(self) -> str:
        return "bake" if self.bake is not None else "import"


@dataclass(frozen=True, slots=True)
class UserDataSettings:
    format: str = "mime"
    kubelet_extra_args: str | None = None
    max_pods: int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LaunchTemplateSettings:
    name: str
    image: str
    karpenter: bool = False
    instance_profile: str | None = None
    security_group_ids: tuple[str, ...] = ()
    channel: str = DEFAULT_CHANNEL
    set_default: bool = True
    user_data: UserDataSettings = field(default_factory=UserDataSettings)


@dataclass(frozen=True, slots=True)
class KarpenterSettings:
    version: str = "v1"
    output_dir: Path = Path("build/karpenter")
    name: str = "default"
    #: How the v1 EC2NodeClass selects its AMI: ``ssm`` (the channel's SSM pointer, so promote
    #: and rollback move Karpenter), ``id`` (pinned to the published AMI) or ``tags`` (the
    #: newest AMI tagged with the image name).
    ami_selector: str = "ssm"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the tasks need, read from one YAML file."""

    aws: AwsSettings = field(default_factory=AwsSettings)
    cluster: ClusterSettings | None = None
    images: tuple[ImageSettings, ...] = ()
    launch_templates: tuple[LaunchTemplateSettings, ...] = ()
    karpenter: KarpenterSettings = field(default_factory=KarpenterSettings)
    limits: LimitsSettings = field(default_factory=LimitsSettings)
    s3_bucket: str | None = None
    ssm_prefix: str = "/eks-ami-pipeline"
    #: Deregistration protection on the AMIs behind a default template version or a channel
    #: pointer, moved by publish, promote and rollback (``build.protect_live_amis``).
    protect_live_amis: bool = False
    state_dir: Path = Path("build")
    source: Path | None = None

    def image(self, name: str | None) -> ImageSettings:
        """The image named ``name``, or the only one when ``name`` is None."""
        if name is None:
            return self._the_only(self.images, f"images: {len(self.images)} images configured",
                                  "--image NAME")
        for img in self.images:
            if img.name == name:
                return img
        known = ", ".join(i.name for i in self.images) or "none"
        raise ConfigError(f"{self._where()}: images: no image named {name!r} (configured: {known})")

    def launch_template(self, name: str | None) -> LaunchTemplateSettings:
        """The launch template named ``name``, or the only one when ``name`` is None."""
        if name is None:
            return self._the_only(self.launch_templates,
                                  f"launch_templates: {len(self.launch_templates)} configured",
                                  "--template NAME")
        for lt in self.launch_templates:
            if lt.name == name:
                return lt
        return LaunchTemplateSettings(name=name, image="")

    def _the_only(self, items: tuple[_T, ...], what: str, flag: str) -> _T:
        """The one configured item, else a ConfigError saying how many and to pass ``flag``."""
        if len(items) == 1:
            return items[0]
        raise ConfigError(f"{self._where()}: {what}; pass {flag}")

    def configured_launch_template(self, name: str | None) -> LaunchTemplateSettings:
        """Like :meth:`launch_template`, but a name that is not configured is refused."""
        if name is not None and all(lt.name != name for lt in self.launch_templates):
            known = ", ".join(lt.name for lt in self.launch_templates) or "none"
            raise ConfigError(f"{self._where()}: launch_templates: no template named {name!r} "
                              f"(configured: {known}); add it to launch_templates:, or pass "
                              "--ad-hoc to publish into a template the configuration does not "
                              "describe (the template rules are then enforced)")
        return self.launch_template(name)

    def require_cluster(self) -> ClusterSettings:
        if self.cluster is None:
            raise ConfigError(f"{self._where()}: cluster: expected a mapping with name, endpoint, "
                              "certificate_authority and service_cidr")
        return self.cluster

    def _where(self) -> str:
        return str(self.source) if self.source else "configuration"


# --------------------------------------------------------------------------- schema

_STR = {"type": "string", "minLength": 1}
_STRLIST = {"type": "array", "items": _STR}
_NAME = {"type": "string", "pattern": f"^{IMAGE_NAME_PATTERN}$"}

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "aws": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "region": {"type": "string", "minLength": 1},
                "profile": {"type": ["string", "null"]},
                "endpoint_url": {"type": ["string", "null"], "pattern": r"^https?://"},
                "retry_mode": {"enum": ["standard", "adaptive", "legacy"]},
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 20},
            },
        },
        "build": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "s3_bucket": {"type": ["string", "null"],
                              "pattern": r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"},
                "ssm_prefix": {"type": "string", "pattern": r"^/[A-Za-z0-9_.\-/]+[^/]$"},
                "state_dir": _STR,
                "protect_live_amis": {"type": "boolean"},
            },
        },
        "cluster": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "kubernetes_version"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[0-9A-Za-z][A-Za-z0-9\-_]{0,99}$"},
                "kubernetes_version": {"type": "string", "pattern": r"^1\.\d+$"},
                "endpoint": {"type": ["string", "null"]},
                "certificate_authority": {"type": ["string", "null"]},
                "service_cidr": _STR,
                "dns_cluster_ip": {"type": ["string", "null"]},
            },
        },
        "images": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": _NAME,
                    "require": {"enum": ["any", "bootstrap.sh", "nodeadm"]},
                    "verify_strict": {"type": "boolean"},
                    "architecture": {"enum": ["x86_64", "arm64"]},
                    "boot_mode": {"enum": ["legacy-bios", "uefi"]},
                    "regions": _STRLIST,
                    "share_with": {"type": "array",
                                   "items": {"type": "string", "pattern": r"^\d{12}$"}},
                    "kms_key_ids": {"type": "object", "additionalProperties": _STR},
                    "max_age_days": {"type": "integer", "minimum": 1},
                    "channels": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["name"],
                            "properties": {
                                "name": _NAME,
                                "soak": {"type": ["string", "integer"],
                                         "pattern": r"^\d+(\.\d+)?[smhd]$", "minimum": 0},
                                "auto_promote": {"type": "boolean"},
                                "health": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "min_instances": {"type": "integer", "minimum": 0},
                                        "status_checks": {"type": "boolean"},
                                    },
                                },
                            },
                        },
                    },
                    "bake": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["base"],       # template: default PACKAGED_TEMPLATE
                        "properties": {
                            "template": _STR,
                            "instance_type": _STR,
                            "var_files": _STRLIST,
                            "variables": {"type": "object",
                                          "additionalProperties": {"type": ["string", "number",
                                                                            "boolean"]}},
                            "base": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "ssm_parameter": _STR,
                                    "ami_id": {"type": "string", "pattern": f"^{AMI_ID_PATTERN}$"},
                                    "name_filter": _STR,
                                    "owners": _STRLIST,
                                },
                            },
                        },
                    },
                    "import": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["source"],
                        "properties": {
                            "source": _STR,
                            "method": {"enum": ["vm-import", "snapshot"]},
                            "bucket": {"type": ["string", "null"]},
                            "kms_key_id": {"type": ["string", "null"]},
                        },
                    },
                },
            },
        },
        "launch_templates": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "image"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[a-zA-Z0-9().\-/_]{3,128}$"},
                    "image": _STR,
                    "karpenter": {"type": "boolean"},
                    "instance_profile": {"type": ["string", "null"]},
                    "security_group_ids": {"type": "array",
                                           "items": {"type": "string", "pattern": r"^sg-[0-9a-f]+$"}},
                    "channel": _NAME,
                    "set_default": {"type": "boolean"},
                    "user_data": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "format": {"enum": ["mime", "script"]},
                            "kubelet_extra_args": {"type": ["string", "null"]},
                            "max_pods": {"type": ["integer", "null"], "minimum": 1,
                                         "maximum": 737},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "taints": _STRLIST,
                        },
                    },
                },
            },
        },
        "limits": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "copy_image_per_region": {"type": "integer", "minimum": 1},
                "import_image_per_region": {"type": "integer", "minimum": 1},
                "put_snapshot_block_per_snapshot": {"type": "integer", "minimum": 1},
                "region_workers": {"type": "integer", "minimum": 1, "maximum": 64},
            },
        },
        "karpenter": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "version": {"enum": ["v1", "v1alpha5", "none"]},
                "output_dir": _STR,
                "name": _NAME,
                "ami_selector": {"enum": ["ssm", "id", "tags"]},
            },
        },
    },
}


def _key_path(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(err: jsonschema.ValidationError) -> tuple[str, str]:
    """Turn a schema error into (key path, 'expected ...') for one output line."""
    path = list(err.absolute_path)
    v = err.validator
    if v == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        return _key_path(path + [extra[0]] if extra else path), f"unknown key; expected one of {allowed}"
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return _key_path(path + [missing]), "required key is missing"
    if v == "enum":
        choices = ", ".join(repr(c) for c in err.validator_value)
        return _key_path(path), f"expected one of {choices}, got {err.instance!r}"
    if v == "type":
        want = err.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return _key_path(path), f"expected {want}, got {type(err.instance).__name__} {err.instance!r}"
    if v == "pattern":
        return _key_path(path), f"expected a value matching {err.validator_value}, got {err.instance!r}"
    if v in ("minimum", "maximum", "minLength"):
        return _key_path(path), f"expected {v} {err.validator_value}, got {err.instance!r}"
    return _key_path(path), err.message


# --------------------------------------------------------------------------- loading


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """``--config PATH``, then ``$PIPELINE_CONFIG``, then ``./pipeline.yaml``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    here = Path.cwd() / DEFAULT_CONFIG_NAME
    return here if here.exists() else None


def load_settings(explicit: str | os.PathLike[str] | None = None, *,
                  required: bool = True, region: str | None = None,
                  profile: str | None = None) -> Settings:
    """Find, read and validate the configuration.

    With ``required=False`` and no file anywhere, return default settings (tasks such
    as ``verify --image`` need no AWS or cluster settings).
    """
    path = find_config(explicit)
    if path is None:
        if not required:
            return _apply_env(Settings(), region=region, profile=profile)
        raise ConfigError(
            f"no configuration found: pass --config PATH, set {CONFIG_ENV}, or copy "
            f"pipeline.example.yaml to ./{DEFAULT_CONFIG_NAME}"
        )
    return parse_settings(read_yaml(path), source=path, region=region, profile=profile)


def read_yaml(path: Path) -> Any:
    """The YAML document in ``path``: a readable UTF-8 file, no duplicate keys, not empty."""
    try:
        text = read_text(path, what="configuration", max_bytes=MAX_CONFIG_BYTES,
                         hint=f"check --config or ${CONFIG_ENV} (a YAML file such as "
                              "pipeline.example.yaml)")
    except InputError as err:
        raise ConfigError(err.message) from err
    try:
        docs = list(yaml.load_all(text, Loader=_StrictLoader))  # a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "?"
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: {where}: not valid YAML ({problem}); fix the syntax") from err
    except _DuplicateKeys as err:
        raise ConfigError(err.lines[0] if len(err.lines) == 1 else
                          f"{path}: {len(err.lines)} duplicate keys",
                          [f"{path}: {line}" for line in err.lines]) from None
    if len(docs) > 1:
        raise ConfigError(f"{path}: {len(docs)} YAML documents (--- separators); keep one")
    if not docs or docs[0] is None:
        raise ConfigError(f"{path}: has no settings (only comments or blank lines); copy "
                          "pipeline.example.yaml and fill it in")
    return docs[0]


MAX_CONFIG_BYTES = MiB


class _DuplicateKeys(Exception):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0])
        self.lines = lines


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        dupes: list[str] = []
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.setdefault(key, line)
            except TypeError:
                continue  # an unhashable key: the constructor reports it
            if first != line:
                dupes.append(f"line {line}: duplicate key {key!r} (first given on line {first}); "
                             "keep one of them")
        if dupes:
            raise _DuplicateKeys(dupes)
        return super().construct_mapping(node, deep=deep)


def _is_int(_checker: Any, value: Any) -> bool:
    """JSON-schema integers are integers here: 110.0 is refused (it would reach the
    NodeConfig as ``maxPods: 110.0``)."""
    return isinstance(value, int) and not isinstance(value, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_int))


def parse_settings(raw: Any, *, source: Path | None = None, region: str | None = None,
                   profile: str | None = None) -> Settings:
    """Validate a parsed YAML document and build :class:`Settings` (``region`` and
    ``profile``: the command line's, which beat the file; see :class:`AwsSettings`)."""
    where = str(source) if source else "configuration"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: (top level): expected a mapping of settings (aws:, cluster:, "
                          f"images: ...), got {type(raw).__name__}")
    # Absolute: Packer and the stages run in other working directories.
    base_dir = (source.parent if source else Path.cwd()).absolute()
    problems = [f"{where}: {p}" for p in config_problems(raw, base_dir)]
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else
                          f"{where}: {len(problems)} problems", problems)
    return _apply_env(_build(raw, base_dir, source), region=region, profile=profile)


def config_problems(raw: dict[str, Any], base_dir: Path | None = None) -> list[str]:
    """Every problem in a parsed configuration, one ``key.path: expected ...`` line each.

    The one function that checks a configuration: the schema, then everything a later
    stage would refuse from the file alone (see the module docstring).
    """
    problems: list[str] = []
    validator = _Validator(_SCHEMA)
    for err in sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path))):
        key, expected = _describe(err)
        problems.append(f"{key}: {expected}")
    try:
        problems.extend(_semantic_problems(raw, base_dir or Path.cwd()))
    except (TypeError, AttributeError, KeyError, ValueError):
        pass  # wrong shapes were already reported by the schema
    return sorted(problems, key=lambda line: line.split(":", 1)[0])


# --------------------------------------------------------------------------- value checks


@functools.lru_cache(maxsize=1)
def known_regions() -> frozenset[str]:
    """Every region in botocore's partition data (``botocore/data/endpoints.json``).

    Read as data: ``core`` never imports botocore (only ``pipeline.aws`` does). Empty
    when botocore is not installed (then regions are not checked).
    """
    spec = importlib.util.find_spec("botocore")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        data = Path(folder) / "data" / "endpoints.json"
        if data.is_file():
            doc = json.loads(data.read_text(encoding="utf-8"))
            return frozenset(r for part in doc.get("partitions", [])
                             for r in part.get("regions", {}))
    return frozenset()


def region_problem(value: Any, name: str) -> str | None:
    """None if ``value`` is an AWS region botocore knows; else one line saying so."""
    regions = known_regions()
    if not isinstance(value, str):
        return f"{name}: expected a region name such as us-east-1, got {value!r}"
    if not regions or value in regions:
        return None
    scored = sorted((-difflib.SequenceMatcher(None, value, r).ratio(), r) for r in regions)
    best = [r for score, r in scored if score == scored[0][0] and -score >= 0.6][:3]
    hint = (f"did you mean {' or '.join(map(repr, best))}?" if best
            else "see `aws ec2 describe-regions`")
    return f"{name}: {value!r} is not an AWS region ({hint})"


def endpoint_problem(value: Any, name: str) -> str | None:
    """None if ``value`` is an https:// URL with a host (a ``$VAR`` is left to the shell)."""
    if not isinstance(value, str) or "$" in value:
        return None if isinstance(value, str) else f"{name} must be an https:// URL, got {value!r}"
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return f"{name} must be an https:// URL of the cluster API server, got {value!r}"
    if parts.scheme != "https" or not host:
        return f"{name} must be an https:// URL of the cluster API server, got {value!r}"
    return None


def dns_problem(value: Any, cidr: str | None, name: str) -> str | None:
    """None if ``value`` is an IP address inside ``cidr`` (when given)."""
    if isinstance(value, str) and "$" in value:
        return None
    try:
        ip = ipaddress.ip_address(str(value))
    except ValueError:
        return f"{name} must be an IP address, got {value!r}"
    if cidr:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return f"service CIDR {cidr!r} is not a network"
        if ip not in net:
            return f"{name} {value} is outside the service CIDR {cidr}; cluster DNS would not resolve"
    return None


def ca_problem(value: Any, name: str = "certificate authority") -> str | None:
    """None if ``value`` is base64 of a PEM certificate (checked down to its DER shape)."""
    if not isinstance(value, str) or not value.strip():
        return f"{name} is empty; expected base64 of a PEM certificate (cluster.certificateAuthority.data)"
    if "$" in value:
        return None
    try:
        pem = base64.b64decode("".join(value.split()), validate=True).decode("ascii")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return f"{name} is not base64 of a PEM certificate (does not decode as base64 text)"
    m = re.search(r"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", pem, re.S)
    if not m:
        return (f"{name} decodes, but not to a PEM certificate (no -----BEGIN CERTIFICATE----- "
                "block); pass the base64 of the PEM, as describe-cluster returns it")
    try:
        der = base64.b64decode("".join(m.group(1).split()), validate=True)
    except (binascii.Error, ValueError):
        return f"{name}: the PEM block's body is not base64"
    if not _is_der_certificate(der):
        return f"{name}: the PEM block is not a DER X.509 certificate"
    return None


def _der_tlv(data: bytes, pos: int) -> tuple[int, int, int] | None:
    """(tag, content start, content end) of the DER element at ``pos``."""
    if pos + 2 > len(data):
        return None
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        n = first & 0x7F
        if n == 0 or n > 4 or pos + n > len(data):
            return None
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    end = pos + length
    return (tag, pos, end) if end <= len(data) else None


def _is_der_certificate(der: bytes) -> bool:
    """Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE,
    signatureValue BIT STRING } spanning exactly the whole DER (RFC 5280 §4.1)."""
    outer = _der_tlv(der, 0)
    if outer is None or outer[0] != 0x30 or outer[2] != len(der):
        return False
    tags, pos = [], outer[1]
    while pos < outer[2]:
        el = _der_tlv(der, pos)
        if el is None:
            return False
        tags.append(el[0])
        pos = el[2]
    return tags == [0x30, 0x30, 0x03]


_KEY_ID = r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})"
_ALIAS = r"alias/[A-Za-z0-9/_-]{1,250}"
_KMS_ARN = re.compile(rf"^arn:aws[a-z-]*:kms:([a-z0-9-]+):\d{{12}}:(?:key/{_KEY_ID}|{_ALIAS})$")


def kms_key_problem(value: Any, name: str, region: str | None = None) -> str | None:
    """None if ``value`` has the form of a KMS key id, alias, key ARN or alias ARN (of
    ``region`` when given: EC2 takes only a key from the region it copies into)."""
    if not isinstance(value, str):
        return f"{name}: expected a KMS key id, alias or ARN, got {value!r}"
    if re.fullmatch(_KEY_ID, value) or re.fullmatch(_ALIAS, value):
        return None
    m = _KMS_ARN.match(value)
    if m is None:
        return (f"{name}: {value!r} is not a KMS key id (1234abcd-12ab-34cd-56ef-1234567890ab), "
                "alias (alias/NAME) or ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)")
    if region and m.group(1) != region:
        return f"{name}: the key ARN is in {m.group(1)}, not {region}; give a key from {region}"
    return None


_TAINT = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?(=[A-Za-z0-9._-]*)?:"
                    r"(NoSchedule|PreferNoSchedule|NoExecute)$")


_LABEL_KEY = re.compile(r"([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}"
                        r"[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?")


_SOAK_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def soak_seconds(value: Any) -> float:
    """``24h``, ``30m``, ``2d``, ``90s`` or a number of seconds, as seconds."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    return float(text[:-1]) * _SOAK_UNITS[text[-1]]


def _channel_problems(raw: dict[str, Any]) -> list[str]:
    """images[].channels: unique names; a soak only from the second channel on; every
    launch template's channel one of its image's channels."""
    out: list[str] = []
    trains: dict[str, list[str]] = {}
    for idx, img in enumerate(raw.get("images") or []):
        if not isinstance(img, dict) or not isinstance(img.get("channels"), list):
            continue
        names = [c.get("name") for c in img["channels"] if isinstance(c, dict)]
        trains[str(img.get("name"))] = [str(n) for n in names]
        for c_idx, ch in enumerate(img["channels"]):
            if not isinstance(ch, dict):
                continue
            where = f"images[{idx}].channels[{c_idx}]"
            if names.count(ch.get("name")) > 1:
                out.append(f"{where}.name: expected a unique channel name, {ch.get('name')!r} "
                           "repeats")
            if c_idx == 0 and (ch.get("soak") or ch.get("auto_promote") or ch.get("health")):
                out.append(f"{where}: the first channel is where rebuild publishes; soak, "
                           "auto_promote and health belong to the channels after it")
    for idx, lt in enumerate(raw.get("launch_templates") or []):
        if not isinstance(lt, dict):
            continue
        train = trains.get(str(lt.get("image")))
        channel = lt.get("channel", DEFAULT_CHANNEL)
        if train and channel not in train:
            out.append(f"launch_templates[{idx}].channel: {channel!r} is not a channel of image "
                       f"{lt.get('image')!r} (channels: {', '.join(train)})")
    return out


def _channels(raw: Any) -> tuple[ChannelSettings, ...]:
    out = []
    for ch in raw or ():
        health = ch.get("health")
        out.append(ChannelSettings(
            name=ch["name"], soak_seconds=soak_seconds(ch.get("soak", 0)),
            auto_promote=bool(ch.get("auto_promote", False)),
            health=HealthRequirement(min_instances=health.get("min_instances", 1),
                                     status_checks=health.get("status_checks", True))
            if health is not None else None))
    return tuple(out)


def _semantic_problems(raw: dict[str, Any], base_dir: Path) -> list[str]:
    out: list[str] = _channel_problems(raw)
    aws = raw.get("aws") or {}
    out += _aws_problems(aws)
    out += _cluster_problems(raw.get("cluster") or {})
    home_region = aws.get("region", "us-east-1")
    images = raw.get("images") or []
    names = [i.get("name") for i in images if isinstance(i, dict)]
    for idx, img in enumerate(images):
        if isinstance(img, dict):
            out += _image_problems(idx, img, names, str(home_region), base_dir)
    out += _launch_template_problems(raw, names)
    out += _folder_problems(raw, base_dir)
    return out


def _aws_problems(aws: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if isinstance(aws.get("region"), str):      # other types: the schema says so
        p = region_problem(aws["region"], "aws.region")
        if p:
            out.append(p)
    endpoint_url = aws.get("endpoint_url")
    if isinstance(endpoint_url, str) and endpoint_url:
        try:
            ok = bool(urlsplit(endpoint_url).hostname)
            urlsplit(endpoint_url).port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            ok = False
        if not ok:
            out.append(f"aws.endpoint_url: expected http(s)://HOST[:PORT], got {endpoint_url!r}")
    return out


def _cluster_problems(cluster: dict[str, Any]) -> list[str]:
    out: list[str] = []
    cidr = cluster.get("service_cidr")
    net = None
    if cidr is not None:
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            out.append(f"cluster.service_cidr: expected a network in CIDR form such as "
                       f"10.100.0.0/16, got {cidr!r}")
    dns = cluster.get("dns_cluster_ip")
    if dns is not None:
        if dns_problem(dns, None, "") is not None:
            out.append(f"cluster.dns_cluster_ip: expected an IP address, got {dns!r}")
        elif net is not None and ipaddress.ip_address(dns).version != net.version:
            out.append(f"cluster.dns_cluster_ip: {dns} is IPv{ipaddress.ip_address(dns).version} "
                       f"but service_cidr {cidr} is IPv{net.version}; an IPv6 cluster takes its "
                       "kubernetesNetworkConfig.serviceIpv6Cidr as service_cidr and a DNS IP "
                       "inside it (default: its ::a address)")
        elif net is not None and dns_problem(dns, str(net), ""):
            out.append(f"cluster.dns_cluster_ip: expected an address inside service_cidr "
                       f"{cidr}, got {dns!r}")
    endpoint = cluster.get("endpoint")
    if endpoint is not None:
        p = endpoint_problem(endpoint, "cluster.endpoint")
        if p:
            out.append(f"cluster.endpoint: expected an https:// URL with a host (the cluster API "
                       f"server, from `aws eks describe-cluster`), got {endpoint!r}")
    ca = cluster.get("certificate_authority")
    if ca is not None:
        p = ca_problem(ca, "cluster.certificate_authority")
        if p:
            out.append(p.replace("cluster.certificate_authority ", "cluster.certificate_authority: ", 1)
                       + ("" if "describe-cluster" in p else
                          "; use certificateAuthority.data from `aws eks describe-cluster`"))
    return out


def _image_problems(idx: int, img: dict[str, Any], names: list[Any], home_region: str,
                    base_dir: Path) -> list[str]:
    out: list[str] = []
    if img.get("name") in names[:idx]:
        out.append(f"images[{idx}].name: expected a unique name, {img.get('name')!r} repeats")
    has_bake, has_import = "bake" in img, "import" in img
    if has_bake == has_import:
        out.append(f"images[{idx}]: expected exactly one of 'bake' or 'import'")
    regions = img.get("regions") or []
    for r_idx, region in enumerate(regions):
        if not isinstance(region, str):
            continue
        p = region_problem(region, f"images[{idx}].regions[{r_idx}]")
        if p:
            out.append(p)
    if len(set(map(str, regions))) != len(regions):
        out.append(f"images[{idx}].regions: a region is listed twice; list each once")
    targets = set(map(str, regions)) or {str(home_region)}
    for region, key in (img.get("kms_key_ids") or {}).items():
        p = region_problem(region, f"images[{idx}].kms_key_ids.{region}")
        if p:
            out.append(p)
        elif region not in targets:
            out.append(f"images[{idx}].kms_key_ids.{region}: region {region} is not in "
                       f"regions {sorted(targets)}; add it to regions or remove the key")
        p = kms_key_problem(key, f"images[{idx}].kms_key_ids.{region}", region)
        if p:
            out.append(p)
    imp = img.get("import") or {}
    if imp.get("kms_key_id") is not None:
        p = kms_key_problem(imp["kms_key_id"], f"images[{idx}].import.kms_key_id",
                            str(home_region))
        if p:
            out.append(p)
    if imp.get("bucket") is not None and not re.fullmatch(
            r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", str(imp["bucket"])):
        out.append(f"images[{idx}].import.bucket: expected an S3 bucket name (3-63 lower-case "
                   f"letters, digits, '.' or '-'), got {imp['bucket']!r}")
    bake = img.get("bake") or {}
    base = bake.get("base")
    if base is not None:
        ways = [k for k in ("ssm_parameter", "ami_id", "name_filter") if k in base]
        if len(ways) != 1:
            out.append(f"images[{idx}].bake.base: expected exactly one of ssm_parameter, "
                       f"ami_id or name_filter, got {ways or 'none'}")
        if "name_filter" in base and not base.get("owners"):
            out.append(f"images[{idx}].bake.base.owners: required with name_filter")
    for v_idx, vf in enumerate(bake.get("var_files") or []):
        path = _resolve(base_dir, vf)
        if not path.is_file():
            what = "not a regular file" if path.exists() else "not found"
            out.append(f"images[{idx}].bake.var_files[{v_idx}]: {path} {what}; fix the path "
                       "(relative paths start at the configuration's folder)")
    return out


def _launch_template_problems(raw: dict[str, Any], names: list[Any]) -> list[str]:
    out: list[str] = []
    lts = raw.get("launch_templates") or []
    lt_names = [lt.get("name") for lt in lts if isinstance(lt, dict)]
    for idx, lt in enumerate(lts):
        if not isinstance(lt, dict):
            continue
        where = f"launch_templates[{idx}]"
        if lt.get("name") in lt_names[:idx]:
            out.append(f"{where}.name: expected a unique name, {lt.get('name')!r} repeats")
        if isinstance(raw.get("images") or [], list) and isinstance(lt.get("image"), str) \
                and all(isinstance(n, str) and is_image_name(n) for n in names) \
                and lt.get("image") not in names:
            out.append(f"{where}.image: expected the name of a configured image "
                       f"({', '.join(map(str, names)) or 'none configured'}), got {lt.get('image')!r}")
        if lt.get("karpenter") is True:
            if not lt.get("instance_profile"):
                out.append(f"{where}.instance_profile: required with karpenter: true (the template "
                           "rules refuse a template without the node instance profile)")
            if not lt.get("security_group_ids"):
                out.append(f"{where}.security_group_ids: required with karpenter: true (groups "
                           "allowing egress on TCP 443 and TCP/UDP 53)")
        ud = lt.get("user_data") or {}
        args = ud.get("kubelet_extra_args")
        if isinstance(args, str):
            try:
                shlex.split(args)
            except ValueError as err:
                out.append(f"{where}.user_data.kubelet_extra_args: does not split as shell words "
                           f"({err}); balance the quotes in {args!r}")
        for t_idx, taint in enumerate(ud.get("taints") or []):
            if isinstance(taint, str) and not _TAINT.match(taint):
                out.append(f"{where}.user_data.taints[{t_idx}]: expected KEY[=VALUE]:EFFECT with "
                           f"EFFECT NoSchedule, PreferNoSchedule or NoExecute, got {taint!r}")
        for key, value in (ud.get("labels") or {}).items():
            if not (_LABEL_KEY.fullmatch(str(key)) and _LABEL_VALUE.fullmatch(str(value))):
                out.append(f"{where}.user_data.labels: {key!r}: {value!r} is not a Kubernetes "
                           "label (KEY: [PREFIX/]NAME, VALUE: up to 63 letters, digits, '-', '_' "
                           "or '.', starting and ending alphanumeric)")
    return out


def _folder_problems(raw: dict[str, Any], base_dir: Path) -> list[str]:
    out: list[str] = []
    for key, default in (("karpenter.output_dir", "build/karpenter"),
                         ("build.state_dir", "build")):
        section, name = key.split(".")
        value = (raw.get(section) or {}).get(name, default)
        if isinstance(value, str) and value:
            path = _resolve(base_dir, value)
            if path.exists() and not path.is_dir():
                out.append(f"{key}: {path} exists and is not a directory; give a folder path")
    return out


def default_instance_type(architecture: str) -> str:
    return DEFAULT_INSTANCE_TYPES.get(architecture, DEFAULT_INSTANCE_TYPES["x86_64"])


def _resolve(base_dir: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def _build(raw: dict[str, Any], base_dir: Path, source: Path | None) -> Settings:
    def p(value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else base_dir / path

    aws_raw = dict(raw.get("aws") or {})
    aws = AwsSettings(**aws_raw, region_from="aws.region" if aws_raw.get("region") else "default")
    c = raw.get("cluster")
    cluster = ClusterSettings(**c) if c else None
    images = []
    for img in raw.get("images") or []:
        bake = imp = None
        if "bake" in img:
            b = img["bake"]
            base = b["base"]
            bake = BakeSettings(
                template=p(b["template"]) if b.get("template") else PACKAGED_TEMPLATE,
                base=BaseImage(ssm_parameter=base.get("ssm_parameter"), ami_id=base.get("ami_id"),
                               name_filter=base.get("name_filter"),
                               owners=tuple(base.get("owners") or ())),
                instance_type=b.get("instance_type") or default_instance_type(
                    img.get("architecture", "x86_64")),
                var_files=tuple(p(v) for v in b.get("var_files") or ()),
                variables={k: str(v) for k, v in (b.get("variables") or {}).items()},
            )
        if "import" in img:
            i = img["import"]
            imp = ImportSettings(source=p(i["source"]), method=i.get("method", "vm-import"),
                                 bucket=i.get("bucket"), kms_key_id=i.get("kms_key_id"))
        images.append(ImageSettings(
            name=img["name"], require=img.get("require", "any"),
            architecture=img.get("architecture", "x86_64"),
            boot_mode=img.get("boot_mode", "legacy-bios"),
            regions=tuple(img.get("regions") or ()), share_with=tuple(img.get("share_with") or ()),
            kms_key_ids=dict(img.get("kms_key_ids") or {}),
            max_age_days=img.get("max_age_days", 30), bake=bake, import_=imp,
            channels=_channels(img.get("channels")),
            verify_strict=bool(img.get("verify_strict", False)),
        ))
    lts = []
    for lt in raw.get("launch_templates") or []:
        ud = lt.get("user_data") or {}
        lts.append(LaunchTemplateSettings(
            name=lt["name"], image=lt["image"], karpenter=lt.get("karpenter", False),
            instance_profile=lt.get("instance_profile"),
            security_group_ids=tuple(lt.get("security_group_ids") or ()),
            channel=lt.get("channel", DEFAULT_CHANNEL), set_default=lt.get("set_default", True),
            user_data=UserDataSettings(
                format=ud.get("format", "mime"), kubelet_extra_args=ud.get("kubelet_extra_args"),
                max_pods=ud.get("max_pods"), labels=dict(ud.get("labels") or {}),
                taints=tuple(ud.get("taints") or ())),
        ))
    k = raw.get("karpenter") or {}
    karpenter = KarpenterSettings(version=k.get("version", "v1"),
                                  output_dir=p(k.get("output_dir", "build/karpenter")),
                                  name=k.get("name", "default"),
                                  ami_selector=k.get("ami_selector", "ssm"))
    b = raw.get("build") or {}
    return Settings(aws=aws, cluster=cluster, images=tuple(images), launch_templates=tuple(lts),
                    karpenter=karpenter, s3_bucket=b.get("s3_bucket"),
                    limits=LimitsSettings(**(raw.get("limits") or {})),
                    ssm_prefix=b.get("ssm_prefix", "/eks-ami-pipeline"),
                    state_dir=p(b.get("state_dir", "build")), source=source,
                    protect_live_amis=b.get("protect_live_amis", False))


def _profile_region(profile: str | None) -> str | None:
    """The ``region`` of ``profile`` (``default`` when None) in the shared AWS config file
    (``$AWS_CONFIG_FILE``, else ``~/.aws/config``), read as the AWS CLI does."""
    import configparser

    path = Path(os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config").expanduser()
    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (OSError, UnicodeDecodeError, configparser.Error):
        return None
    name = profile or "default"
    for section in ((f"profile {name}", name) if name != "default" else ("default",)):
        if parser.has_option(section, "region"):
            return parser.get(section, "region").strip() or None
    return None


def _apply_env(settings: Settings, *, region: str | None = None,
               profile: str | None = None) -> Settings:
    """Flags, then the file, then the environment, then the profile (see
    :class:`AwsSettings`); the endpoint from ``$AWS_ENDPOINT_URL`` beats the file."""
    from dataclasses import replace

    aws = settings.aws
    changes: dict[str, Any] = {}
    if profile:
        changes["profile"] = profile
    elif aws.profile is None and os.environ.get("AWS_PROFILE"):
        changes["profile"] = os.environ["AWS_PROFILE"]
    chosen: tuple[str, str] | None = None
    if region:
        chosen = (region, "--region")
    elif aws.region_from == "default":
        for var in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            if os.environ.get(var):
                chosen = (os.environ[var], f"${var}")
                break
        else:
            from_profile = _profile_region(changes.get("profile", aws.profile))
            if from_profile:
                chosen = (from_profile, f"the region of profile "
                                        f"{changes.get('profile', aws.profile) or 'default'}")
    if chosen is not None:
        problem = region_problem(chosen[0], chosen[1])
        if problem:
            raise ConfigError(problem)
        changes["region"], changes["region_from"] = chosen
    env = os.environ.get(ENDPOINT_ENV)
    if env:
        changes["endpoint_url"] = env
    if changes:
        return replace(settings, aws=replace(aws, **changes))
    return settings
