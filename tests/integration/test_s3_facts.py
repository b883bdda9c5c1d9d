"""Bucket facts read back from a moto server on loopback, as configured by the test."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto_http import deny, moto_server, reset, s3_client

from panscan.sources.s3_facts import (
    NEVER_VERSIONED,
    NOT_CONFIGURED,
    NOT_PERMITTED,
    Encryption,
    LifecycleRule,
    Logging,
    ObjectLock,
    PublicAccessBlock,
    Transition,
    bucket_facts,
)

KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture()
def s3(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    reset(endpoint)
    return s3_client(endpoint)


def configure_everything(s3: Any, bucket: str) -> None:
    s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)  # also enables versioning
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [{
        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KMS_KEY},
        "BucketKeyEnabled": True,
    }]})
    s3.create_bucket(Bucket="access-logs")
    s3.put_bucket_acl(Bucket="access-logs", ACL="log-delivery-write")
    s3.put_bucket_logging(Bucket=bucket, BucketLoggingStatus={"LoggingEnabled": {
        "TargetBucket": "access-logs", "TargetPrefix": f"{bucket}/"}})
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {
            "ID": "card-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"},
            "Expiration": {"Days": 365},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 90},
            "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"},
                            {"Days": 180, "StorageClass": "GLACIER"}],
            "NoncurrentVersionTransitions": [{"NoncurrentDays": 30, "StorageClass": "GLACIER"}],
        },
        {"ID": "tmp", "Status": "Disabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 7}},
    ]})
    s3.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled",
        "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 30}},
    })
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
        "RestrictPublicBuckets": False})


def test_every_configured_fact_is_read_back(s3: Any) -> None:
    configure_everything(s3, "cardholder-data")

    facts = bucket_facts(s3, "cardholder-data")

    assert facts.versioning == "Enabled"
    assert facts.encryption == Encryption("aws:kms", KMS_KEY, True)
    assert facts.logging == Logging("access-logs", "cardholder-data/")
    assert facts.lifecycle == (
        LifecycleRule(
            id="card-logs", enabled=True, prefix="logs/", expiration_days=365, noncurrent_expiration_days=90,
            transitions=(Transition("STANDARD_IA", 30), Transition("GLACIER", 180)),
            noncurrent_transitions=(Transition("GLACIER", 30),),
        ),
        LifecycleRule(id="tmp", enabled=False, prefix="", expiration_days=7),
    )
    assert facts.object_lock == ObjectLock(True, "GOVERNANCE", 30, None)
    assert facts.public_access_block == PublicAccessBlock(True, True, True, False)


def test_a_bare_bucket_has_nothing_configured(s3: Any) -> None:
    s3.create_bucket(Bucket="bare-bucket")

    facts = bucket_facts(s3, "bare-bucket")

    assert facts.versioning == NEVER_VERSIONED
    assert (facts.encryption, facts.logging, facts.lifecycle, facts.object_lock, facts.public_access_block) == (
        NOT_CONFIGURED,) * 5


def test_suspended_versioning_is_reported_as_suspended(s3: Any) -> None:
    s3.create_bucket(Bucket="was-versioned")
    s3.put_bucket_versioning(Bucket="was-versioned", VersioningConfiguration={"Status": "Enabled"})
    s3.put_bucket_versioning(Bucket="was-versioned", VersioningConfiguration={"Status": "Suspended"})

    assert bucket_facts(s3, "was-versioned").versioning == "Suspended"


def test_a_refused_fact_is_not_permitted_and_the_others_are_still_read(s3: Any, endpoint: str) -> None:
    configure_everything(s3, "half-visible")
    client = s3_client(endpoint)
    for operation in ("GetBucketLogging", "GetBucketEncryption", "GetBucketVersioning"):
        deny(client, operation)

    facts = bucket_facts(client, "half-visible")

    assert (facts.logging, facts.encryption, facts.versioning) == (NOT_PERMITTED,) * 3
    assert facts.object_lock == ObjectLock(True, "GOVERNANCE", 30, None)
    assert facts.public_access_block == PublicAccessBlock(True, True, True, False)
    assert isinstance(facts.lifecycle, tuple) and len(facts.lifecycle) == 2


def test_a_missing_bucket_gives_an_error_per_fact_not_an_exception(s3: Any) -> None:
    facts = bucket_facts(s3, "no-such-bucket-at-all")

    assert facts.versioning == "error: NoSuchBucket"
    assert facts.encryption == "error: NoSuchBucket"


def test_the_record_is_json_with_type_bucket(s3: Any) -> None:
    configure_everything(s3, "cardholder-data")
    s3.create_bucket(Bucket="bare-bucket")

    full = json.loads(json.dumps(bucket_facts(s3, "cardholder-data").to_record()))
    bare = json.loads(json.dumps(bucket_facts(s3, "bare-bucket").to_record()))

    assert full["type"] == "bucket" and full["bucket"] == "cardholder-data"
    assert full["encryption"] == {"algorithm": "aws:kms", "kms_key_id": KMS_KEY, "bucket_key_enabled": True}
    assert full["lifecycle"][0]["noncurrent_expiration_days"] == 90
    assert full["lifecycle"][0]["transitions"][1] == {"storage_class": "GLACIER", "days": 180, "date": None}
    assert full["public_access_block"]["restrict_public_buckets"] is False
    assert bare == {"type": "bucket", "bucket": "bare-bucket", "versioning": "never",
                    "encryption": NOT_CONFIGURED, "logging": NOT_CONFIGURED, "lifecycle": NOT_CONFIGURED,
                    "object_lock": NOT_CONFIGURED, "public_access_block": NOT_CONFIGURED}
