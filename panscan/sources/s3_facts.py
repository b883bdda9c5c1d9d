"""Bucket facts an assessor asks for beside the scan: versioning, default encryption,
server access logging, lifecycle rules, Object Lock and the public access block.

What callers may rely on:

* :func:`bucket_facts` sends only read-only ``GetBucket*`` requests (one per fact) and never
  raises for a refusal or a missing configuration: every fact is either its value (a
  frozen dataclass, or the versioning status string) or one of the strings
  :data:`NOT_CONFIGURED` (S3 answered ``NoSuch…``/``…NotFound…``: nothing is set),
  :data:`NOT_PERMITTED` (``AccessDenied``: the credentials lack ``s3:GetBucket…``), or
  ``"error: <code>"`` for anything else (throttling past the retries, a dead endpoint).
  So one missing permission costs one fact, never the others or the scan.
* Versioning is ``"Enabled"``, ``"Suspended"`` or ``"never"`` (never enabled: every object
  has only the null version), or one of the two non-value strings above.
* :meth:`BucketFacts.to_record` is a JSON-able dict with ``"type": "bucket"``; facts that
  are values become nested dicts (lifecycle: a list of rules), the others stay strings.
* Everything here is plain frozen data: picklable, no client kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError

NOT_CONFIGURED = "not configured"
NOT_PERMITTED = "not permitted"
NEVER_VERSIONED = "never"

# Error codes S3 gives for "this bucket has no such configuration".
_NOT_CONFIGURED_CODES = frozenset({
    "ServerSideEncryptionConfigurationNotFoundError",
    "NoSuchLifecycleConfiguration",
    "ObjectLockConfigurationNotFoundError",
    "NoSuchPublicAccessBlockConfiguration",
    "NoSuchBucketPolicy",
})
_DENIED_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "403"})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Encryption:
    """Default encryption: ``algorithm`` is ``AES256``, ``aws:kms`` or ``aws:kms:dsse``."""

    algorithm: str
    kms_key_id: str | None = None
    bucket_key_enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class Logging:
    """Server access logging is on, delivered to ``target_bucket``/``target_prefix``."""

    target_bucket: str
    target_prefix: str


@dataclass(frozen=True, slots=True)
class Transition:
    """Objects move to ``storage_class`` after ``days`` (or on ``date``, ISO 8601)."""

    storage_class: str
    days: int | None = None
    date: str | None = None


@dataclass(frozen=True, slots=True)
class LifecycleRule:
    """One lifecycle rule, reduced to what bears on retention; ``prefix`` is the rule's
    filter prefix (``""``: the whole bucket, or a filter on tags or sizes only).
    ``narrowed``: the filter also selects by tag or object size, so the rule may leave
    out any object under its prefix."""

    id: str | None
    enabled: bool
    prefix: str
    expiration_days: int | None = None
    expiration_date: str | None = None
    noncurrent_expiration_days: int | None = None
    transitions: tuple[Transition, ...] = ()
    noncurrent_transitions: tuple[Transition, ...] = ()
    narrowed: bool = False


@dataclass(frozen=True, slots=True)
class ObjectLock:
    """Object Lock state; ``mode`` (``GOVERNANCE``/``COMPLIANCE``) and ``days``/``years``
    are the default retention, None when there is none."""

    enabled: bool
    mode: str | None = None
    days: int | None = None
    years: int | None = None


@dataclass(frozen=True, slots=True)
class PublicAccessBlock:
    block_public_acls: bool
    ignore_public_acls: bool
    block_public_policy: bool
    restrict_public_buckets: bool


@dataclass(frozen=True, slots=True)
class BucketFacts:
    """Facts about one bucket; each is a value or a non-value string (module docstring)."""

    bucket: str
    versioning: str
    encryption: Encryption | str
    logging: Logging | str
    lifecycle: tuple[LifecycleRule, ...] | str
    object_lock: ObjectLock | str
    public_access_block: PublicAccessBlock | str

    def to_record(self) -> dict[str, Any]:
        def plain(value: object) -> Any:
            if isinstance(value, str):
                return value
            if isinstance(value, tuple):
                return [asdict(v) for v in value]
            return asdict(value)  # type: ignore[call-overload]

        return {
            "type": "bucket",
            "bucket": self.bucket,
            "versioning": self.versioning,
            "encryption": plain(self.encryption),
            "logging": plain(self.logging),
            "lifecycle": plain(self.lifecycle),
            "object_lock": plain(self.object_lock),
            "public_access_block": plain(self.public_access_block),
        }


def bucket_facts(client: Any, bucket: str) -> BucketFacts:
    """The facts of ``bucket`` read with ``client`` (a boto3 S3 client in the bucket's
    region); see the module docstring for what each fact may be."""
    unreachable: list[str] = []  # once the endpoint did not answer, the other facts are not asked

    def fact(call: Callable[[], Mapping[str, Any]], read: Callable[[Mapping[str, Any]], T]) -> T | str:
        if unreachable:
            return unreachable[0]
        try:
            return _fact(call, read)
        except (EndpointConnectionError, ConnectTimeoutError) as e:
            unreachable.append(f"error: {type(e).__name__}")
            return unreachable[0]

    return BucketFacts(
        bucket=bucket,
        versioning=fact(lambda: client.get_bucket_versioning(Bucket=bucket), _versioning),
        encryption=fact(lambda: client.get_bucket_encryption(Bucket=bucket), _encryption),
        logging=fact(lambda: client.get_bucket_logging(Bucket=bucket), _logging),
        lifecycle=fact(lambda: client.get_bucket_lifecycle_configuration(Bucket=bucket), _lifecycle),
        object_lock=fact(lambda: client.get_object_lock_configuration(Bucket=bucket), _object_lock),
        public_access_block=fact(lambda: client.get_public_access_block(Bucket=bucket), _public_access_block),
    )


def _fact(call: Callable[[], Mapping[str, Any]], read: Callable[[Mapping[str, Any]], T]) -> T | str:
    """The fact ``read`` from what ``call`` answers; raises only when the endpoint did not
    answer at all (every other failure is the fact's value)."""
    try:
        response = call()
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in _NOT_CONFIGURED_CODES:
            return NOT_CONFIGURED
        if code in _DENIED_CODES:
            return NOT_PERMITTED
        return f"error: {code or 'unknown'}"
    except (EndpointConnectionError, ConnectTimeoutError):
        raise
    except BotoCoreError as e:
        return f"error: {type(e).__name__}"
    return read(response)


def _versioning(response: Mapping[str, Any]) -> str:
    # GetBucketVersioning leaves Status out for a bucket that was never versioned.
    return str(response.get("Status") or NEVER_VERSIONED)


def _encryption(response: Mapping[str, Any]) -> Encryption | str:
    rules = response.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    for rule in rules:
        default = rule.get("ApplyServerSideEncryptionByDefault")
        if default:
            return Encryption(
                algorithm=str(default.get("SSEAlgorithm", "")),
                kms_key_id=default.get("KMSMasterKeyID"),
                bucket_key_enabled=rule.get("BucketKeyEnabled"),
            )
    return NOT_CONFIGURED


def _logging(response: Mapping[str, Any]) -> Logging | str:
    # A bucket without logging answers 200 with no LoggingEnabled element.
    enabled = response.get("LoggingEnabled")
    if not enabled:
        return NOT_CONFIGURED
    return Logging(str(enabled.get("TargetBucket", "")), str(enabled.get("TargetPrefix", "")))


def _lifecycle(response: Mapping[str, Any]) -> tuple[LifecycleRule, ...] | str:
    rules = response.get("Rules", [])
    if not rules:
        return NOT_CONFIGURED
    return tuple(_rule(rule) for rule in rules)


def _rule(rule: Mapping[str, Any]) -> LifecycleRule:
    expiration = rule.get("Expiration", {})
    noncurrent = rule.get("NoncurrentVersionExpiration", {})
    return LifecycleRule(
        id=rule.get("ID"),
        enabled=rule.get("Status") == "Enabled",
        prefix=_rule_prefix(rule),
        expiration_days=expiration.get("Days"),
        expiration_date=_iso(expiration.get("Date")),
        noncurrent_expiration_days=noncurrent.get("NoncurrentDays"),
        transitions=tuple(
            Transition(str(t.get("StorageClass", "")), t.get("Days"), _iso(t.get("Date")))
            for t in rule.get("Transitions", [])
        ),
        noncurrent_transitions=tuple(
            Transition(str(t.get("StorageClass", "")), t.get("NoncurrentDays"))
            for t in rule.get("NoncurrentVersionTransitions", [])
        ),
        narrowed=_rule_narrowed(rule),
    )


def _rule_prefix(rule: Mapping[str, Any]) -> str:
    # The prefix sits in Filter.Prefix, Filter.And.Prefix or (legacy rules) Prefix.
    flt = rule.get("Filter", {})
    prefix = flt.get("Prefix", flt.get("And", {}).get("Prefix", rule.get("Prefix", "")))
    return str(prefix or "")


_NARROWING_KEYS = ("Tag", "Tags", "ObjectSizeGreaterThan", "ObjectSizeLessThan")


def _rule_narrowed(rule: Mapping[str, Any]) -> bool:
    # A tag or size condition means the rule cannot be relied on for every object under its
    # prefix; S3 puts single conditions in Filter and combined ones in Filter.And.
    flt = rule.get("Filter") or {}
    both = flt.get("And") or {}
    return any(cond.get(key) not in (None, [], {}) for cond in (flt, both) for key in _NARROWING_KEYS)


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else (str(value) if value else None)


def _object_lock(response: Mapping[str, Any]) -> ObjectLock | str:
    config = response.get("ObjectLockConfiguration", {})
    if config.get("ObjectLockEnabled") != "Enabled":
        return NOT_CONFIGURED
    retention = config.get("Rule", {}).get("DefaultRetention", {})
    # S3 accepts Days or Years, each at least 1; some servers echo the other one as 0.
    return ObjectLock(True, retention.get("Mode"), retention.get("Days") or None, retention.get("Years") or None)


def _public_access_block(response: Mapping[str, Any]) -> PublicAccessBlock | str:
    config = response.get("PublicAccessBlockConfiguration")
    if not config:
        return NOT_CONFIGURED
    return PublicAccessBlock(
        bool(config.get("BlockPublicAcls")), bool(config.get("IgnorePublicAcls")),
        bool(config.get("BlockPublicPolicy")), bool(config.get("RestrictPublicBuckets")),
    )
