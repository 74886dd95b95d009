"""S3 access for the workflow: one boto3 client for objects, one pyarrow filesystem for Ray.

Credentials always come from the default chains (environment, ~/.aws, the EC2 instance profile);
nothing here reads, stores or prints them. ``endpoint_url`` is the local cloud's S3 endpoint, or
``None`` on AWS.

An S3 outage (issue 16): both clients retry a failed or timed-out call with exponential backoff, up to
``S3_MAX_ATTEMPTS`` attempts (boto3's ``standard`` retry mode, backoff capped at 20 s; pyarrow's
``AwsStandardS3RetryStrategy`` for Ray Data and Ray Train), each attempt bounded by ``S3_CONNECT_TIMEOUT_S``
and ``S3_READ_TIMEOUT_S``. An outage shorter than about a minute is ridden out; a longer one fails
the call after at most ``S3_MAX_ATTEMPTS`` x (timeouts) + the backoffs (about 4 minutes) with one
sentence, and the run stops before its pointer: nothing is promoted. A Ray Train checkpoint that cannot
be written fails the worker group's attempt, which restarts from the last checkpoint (``max_failures``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import boto3
import pyarrow.fs
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from rayops.workflow.errors import WorkflowError

#: Attempts of one S3 call (the first and the retries), boto3 and pyarrow alike.
S3_MAX_ATTEMPTS = 8
#: Bounds of one attempt: connecting, and waiting for an answer (an endpoint that hangs counts as down).
S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 20


def describe_s3_error(err: Exception) -> str:
    """A short reason for an S3 failure, without request ids or credentials."""
    if isinstance(err, ClientError):
        info = err.response.get("Error", {})
        code = info.get("Code", "error")
        message = info.get("Message", "")
        return f"{code}: {message}" if message else str(code)
    if isinstance(err, NoCredentialsError):
        return "no AWS credentials were found (environment, ~/.aws or the instance profile)"
    return str(err) or type(err).__name__


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); raises WorkflowError on anything else."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise WorkflowError(f"{uri!r} is not an S3 object URI: write it as s3://bucket/key")
    return parts.netloc, parts.path.lstrip("/")


#: The tag of every object version the workflow writes; a promotion sets it to "true" on the versions
#: its pointer and manifest pin, and the buckets' noncurrent-expiry rule only matches "false".
PIN_TAG = "rayops-pinned"


class PreconditionFailed(WorkflowError):
    """A conditional write was refused: the key exists (``IfNoneMatch``) or changed (``IfMatch``)."""


@dataclass(frozen=True)
class PutResult:
    bucket: str
    key: str
    version_id: str | None
    etag: str | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


class S3Store:
    """Small wrapper around boto3 that turns every failure into one sentence."""

    def __init__(self, endpoint_url: str | None = None, region: str | None = None) -> None:
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self.region = (
            region
            or os.environ.get("AWS_REGION")
            or os.environ.get("AWS_DEFAULT_REGION")
            or boto3.session.Session().region_name
            or ("us-east-1" if self.endpoint_url else None)
        )
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                config=Config(
                    retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
                    connect_timeout=S3_CONNECT_TIMEOUT_S,
                    read_timeout=S3_READ_TIMEOUT_S,
                ),
            )
        return self._client

    def filesystem(self, bucket_for_region: str | None = None) -> pyarrow.fs.S3FileSystem:
        """A pyarrow S3 filesystem for Ray Data and Ray Train storage (picklable, credential-free), with
        the same retry bound as the boto3 client."""
        bounds: dict[str, Any] = {
            "retry_strategy": pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS),
            "connect_timeout": S3_CONNECT_TIMEOUT_S,
            "request_timeout": S3_READ_TIMEOUT_S,
        }
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url)
            return pyarrow.fs.S3FileSystem(
                endpoint_override=parts.netloc,
                scheme=parts.scheme,
                region=self.region or "us-east-1",
                **bounds,
            )
        region = self.region
        if region is None and bucket_for_region:
            region = pyarrow.fs.resolve_s3_region(bucket_for_region)
        return (
            pyarrow.fs.S3FileSystem(region=region, **bounds) if region else pyarrow.fs.S3FileSystem(**bounds)
        )

    def _fail(self, action: str, uri: str, err: Exception, hint: str) -> WorkflowError:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return WorkflowError(f"cannot {action} {uri}{where} ({describe_s3_error(err)}): {hint}")

    def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        if_none_match: bool = False,
        if_match: str | None = None,
    ) -> PutResult:
        """Write an object tagged ``rayops-pinned=false``. ``if_none_match``: only if the key does not
        exist yet; ``if_match``: only if the key's current ETag is this one. A refused condition raises
        PreconditionFailed (S3's PreconditionFailed or ConditionalRequestConflict, 412/409)."""
        extra: dict[str, str] = {}
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        if if_match is not None:
            extra["IfMatch"] = if_match
        uri = f"s3://{bucket}/{key}"
        try:
            response = self.client.put_object(
                Bucket=bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                Metadata=metadata or {},
                Tagging=f"{PIN_TAG}=false",
                **extra,
            )
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code")
            if extra and code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412"):
                condition = "it already exists" if if_none_match else "it changed since it was read"
                raise PreconditionFailed(f"{uri} was not written: {condition}") from err
            hint = "check --buckets, --s3-endpoint-url and the credentials"
            raise self._fail("write", uri, err, hint) from err
        except BotoCoreError as err:
            raise self._fail(
                "write", f"s3://{bucket}/{key}", err, "check --buckets, --s3-endpoint-url and the credentials"
            ) from err
        version = response.get("VersionId")
        version = version if version and version != "null" else None
        return PutResult(bucket, key, version, response.get("ETag"))

    def put_json(
        self, bucket: str, key: str, value: Any, *, if_none_match: bool = False, if_match: str | None = None
    ) -> PutResult:
        body = (json.dumps(value, indent=2, sort_keys=True) + "\n").encode()
        return self.put_bytes(
            bucket, key, body, content_type="application/json", if_none_match=if_none_match, if_match=if_match
        )

    def get_json_etag(self, bucket: str, key: str) -> tuple[Any, str] | None:
        """The JSON object at a key and the ETag of the version read, or None if there is no such key."""
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
            body = response["Body"].read()
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(
                "read", f"s3://{bucket}/{key}", err, "check --buckets, --s3-endpoint-url and the credentials"
            ) from err
        except BotoCoreError as err:
            raise self._fail(
                "reach", f"s3://{bucket}/{key}", err, "check --s3-endpoint-url and the network"
            ) from err
        return json.loads(body), str(response["ETag"])

    def pin(self, bucket: str, key: str, version_id: str | None) -> None:
        """Tag one object version ``rayops-pinned=true``: the noncurrent-expiry rule no longer matches it."""
        extra = {"VersionId": version_id} if version_id else {}
        try:
            self.client.put_object_tagging(
                Bucket=bucket,
                Key=key,
                Tagging={"TagSet": [{"Key": PIN_TAG, "Value": "true"}]},
                **extra,
            )
        except (ClientError, BotoCoreError) as err:
            raise self._fail(
                "pin", f"s3://{bucket}/{key} (version {version_id})", err, "check the node's S3 permissions"
            ) from err

    def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        extra = {"VersionId": version_id} if version_id else {}
        try:
            body: bytes = self.client.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
        except (ClientError, BotoCoreError) as err:
            raise self._fail(
                "read", f"s3://{bucket}/{key}", err, "check the URI, --s3-endpoint-url and the credentials"
            ) from err
        return body

    def get_json(self, bucket: str, key: str) -> Any | None:
        """The JSON object at a key, or None if there is no such key."""
        if self.head(bucket, key) is None:
            return None
        return json.loads(self.get_bytes(bucket, key))

    def head(self, bucket: str, key: str) -> dict[str, Any] | None:
        """The object's metadata (``VersionId``, ``Metadata``...), or None if the key does not exist."""
        try:
            response: dict[str, Any] = self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(
                "inspect", f"s3://{bucket}/{key}", err, "check --buckets and the credentials"
            ) from err
        except BotoCoreError as err:
            raise self._fail(
                "reach", f"s3://{bucket}/{key}", err, "check --s3-endpoint-url and the network"
            ) from err
        return response

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete the current objects under ``prefix`` (a folder: it ends with ``/``). The buckets are
        versioned, so each delete only adds a delete marker: every version stays. Returns how many."""
        if not prefix.endswith("/"):
            raise ValueError(f"delete_prefix needs a folder prefix ending with '/', got {prefix!r}")
        uri = f"s3://{bucket}/{prefix}"
        deleted = 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
                    deleted += len(keys)
        except (ClientError, BotoCoreError) as err:
            raise self._fail("clear", uri, err, "check the head's S3 permissions (s3:DeleteObject)") from err
        return deleted
