"""Shared fixtures: the script imported by path, the vectors, a clean environment, real S3."""

import json
import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
VECTORS = TESTS / "vectors"   # copied from the existing tool's backups (shared/vectors)
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(TESTS))

import encrypted_s3_backup as esb  # noqa: E402

# PASSWORD and SALT are also the inputs of the known answers of FORMAT.md section 6
# (test_crypto.py, test_codec.py): other values would change those answers.
PASSWORD = "correct horse battery staple"
SALT = "000102030405060708090a0b0c0d0e0f"          # as configured: 32 hex digits
SALT_BYTES = bytes.fromhex(SALT)
S3_SECRET = "AwsS3cretKey-Zq9Xw7Vv5Uu3"             # a made-up S3 secret key, easy to spot


def make_codec(**fields) -> "esb.Codec":
    """A Codec of PASSWORD and SALT; keyword arguments replace any field."""
    return esb.Codec(**{"password": PASSWORD, "salt": SALT_BYTES, **fields})



def load_vectors():
    """[(name, manifest, backup dir)] for every vector configuration."""
    out = []
    for folder in sorted(VECTORS.iterdir()):
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        out.append((folder.name, manifest, folder / "backup"))
    return out


def codec_for(manifest, **overrides) -> "esb.Codec":
    """The Codec a vector was written with, from its manifest's config keys."""
    salt = manifest.get("encryption_salt")
    settings = dict(
        compress=manifest.get("compress", True), encrypt=manifest.get("encrypt", True),
        encryption_type=manifest.get("encryption_type") or "aes",
        password=manifest["encryption_password"],
        salt=bytes.fromhex(salt) if salt else None,
        encrypt_filenames=manifest.get("encrypt_filenames", False))
    settings.update(overrides)
    return esb.Codec(**settings)


def set_env(monkeypatch, **env):
    """Set configuration environment variables for one test (None removes one)."""
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, str(value))


def s3_env(prefix, bucket, base_path=None):
    """The environment variables that make storage section ``prefix`` (SRC, DEST, RESTORE)
    the test's bucket."""
    env = {f"{prefix}_S3_BUCKET": bucket.name, f"{prefix}_AWS_ACCESS_KEY_ID": bucket.access_key,
           f"{prefix}_AWS_SECRET_ACCESS_KEY": bucket.secret_key,
           f"{prefix}_ENDPOINT_URL": bucket.endpoint_url, f"{prefix}_REGION_NAME": bucket.region}
    if base_path:
        env[f"{prefix}_BASE_PATH"] = base_path
    return env


def s3_config(bucket, **overrides) -> "esb.StorageConfig":
    """A StorageConfig for the test's bucket; keyword arguments replace any field."""
    settings = dict(s3_bucket=bucket.name, aws_access_key_id=bucket.access_key,
                    aws_secret_access_key=bucket.secret_key, endpoint_url=bucket.endpoint_url,
                    region_name=bucket.region)
    settings.update(overrides)
    return esb.StorageConfig(**settings)


def run_main(capsys, *argv):
    """The tool in-process, as a user runs it: (exit code, stdout, stderr)."""
    code = esb.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


VECTOR_LIST = load_vectors()
VECTOR_IDS = [name for name, _, _ in VECTOR_LIST]


@pytest.fixture(params=VECTOR_LIST, ids=VECTOR_IDS)
def vector(request):
    return request.param


def config_variables() -> frozenset:
    """The name of every environment variable the script takes configuration from, derived
    from its configuration keys (a key added there is covered here without a change)."""
    names = {esb.env_name(key) for key in esb.TOP_KEYS}
    names.update(esb.env_name(section, key)
                 for section in esb.STORAGE_SECTIONS for key in esb.STORAGE_KEYS)
    return frozenset(names)


CONFIG_VARIABLES = config_variables()


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Our configuration comes from the environment too: no test sees a stray variable."""
    for name in CONFIG_VARIABLES & set(os.environ):
        monkeypatch.delenv(name)


from s3_server import s3_bucket, s3_server  # noqa: E402,F401  (fixtures: a real S3 server)
