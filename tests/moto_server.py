"""A second S3 server for the tests, for what SeaweedFS does not emulate: the archive storage
classes (GLACIER, DEEP_ARCHIVE), RestoreObject, HeadObject's Restore header and the errors
S3 gives for reading or copying an archived object that is not thawed.

It is moto in server mode (``moto[server]``, installed by requirements-dev.txt): a real HTTP
S3 endpoint, run by ``moto.server.ThreadedMotoServer`` in a thread of this process on a
loopback port the system picks. One server runs per test module that uses it
(``moto_server``): its threads live in the test process, and the tests of other modules,
which fork the tool's workers, are better off without them. Each test gets its own bucket
(``moto_bucket``), emptied and removed afterwards. A missing moto is a test failure, never
a skip.

How moto thaws, as checked against moto 5.2: an object's restore status is a moto "managed
state" (model ``s3::keyrestore``, transitions None -> IN_PROGRESS -> RESTORED) whose default
progression is "immediate", so a RestoreObject request thaws at once, which is never what S3
does. The server fixture therefore sets that model's progression to "manual" with a count
no test reaches, so that moto never moves a status by itself, and the test moves it, as the
hours of a real thaw would, with ``thaws_under_way`` (every object of the bucket whose
thaw is asked for from then on reports ``ongoing-request="true"`` and stays unreadable) and
``thaws_done`` (every asked-for thaw is complete: ``ongoing-request="false",
expiry-date=...``, readable, copyable). Both set the status of moto's own objects, which
live in this process. What moto does by itself and is used as it is: ListObjectsV2 gives
each object's StorageClass; GetObject of an unthawed GLACIER or DEEP_ARCHIVE object answers
403 InvalidObjectState, CopyObject from one 403 ObjectNotInActiveTierError; RestoreObject
answers 202 when first asked and 200 once a thaw was asked for, and refuses an object not in
an archive class (InvalidObjectState). Unlike AWS it accepts the Expedited tier for
DEEP_ARCHIVE and never answers RestoreAlreadyInProgress.
"""

from __future__ import annotations

import logging
import secrets
from typing import Iterator

import pytest

from s3_server import REGION, S3Bucket, fresh_bucket

RESTORE_MODEL = "s3::keyrestore"        # moto's managed-state model of an object's restore
NEVER = 10 ** 9                         # "manual" progression: moves after this many reads


class MotoS3:
    """The running moto server: its endpoint and made-up credentials (moto takes any)."""

    def __init__(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as error:       # a broken install must show, not skip
            pytest.fail(f"moto is not installed ({error}); pip install -r "
                        "requirements-dev.txt", pytrace=False)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)   # no line per request
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        self.region = REGION
        self.access_key = "AKIA" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        from moto.moto_api import state_manager
        state_manager.set_transition(RESTORE_MODEL, {"progression": "manual", "times": NEVER})

    def client(self):
        import boto3
        from botocore.config import Config
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=REGION,
                            aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key,
                            config=Config(retries={"max_attempts": 2, "mode": "standard"}))

    def stop(self) -> None:
        from moto.moto_api import state_manager
        state_manager.unset_transition(RESTORE_MODEL)
        self.server.stop()


def _moto_keys(bucket: S3Bucket) -> list:
    """moto's own objects of ``bucket`` (they live in this process)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    return list(s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_bucket(bucket.name).keys.values())


def thaws_under_way(bucket: S3Bucket) -> None:
    """From now on, a thaw asked for (or asked for already) in ``bucket`` is under way: the
    object reports ``ongoing-request="true"`` and cannot be read."""
    for key in _moto_keys(bucket):
        key.status = "IN_PROGRESS"


def thaws_done(bucket: S3Bucket) -> None:
    """Every thaw asked for in ``bucket`` is complete: those objects can be read."""
    for key in _moto_keys(bucket):
        if key.expiry_date is not None:
            key.status = "RESTORED"


def restore_header(bucket: S3Bucket, key: str):
    """HeadObject's Restore header of ``key``, seen directly (None when there is none)."""
    return bucket.client.head_object(Bucket=bucket.name, Key=key).get("Restore")


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoS3]:
    """One moto S3 server for a test module."""
    server = MotoS3()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_bucket(moto_server: MotoS3) -> Iterator[S3Bucket]:
    """A fresh, empty bucket on moto (see fresh_bucket)."""
    yield from fresh_bucket(moto_server)
