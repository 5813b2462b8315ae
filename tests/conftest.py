"""Shared fixtures and helpers: the script imported by path, the vectors, a clean environment,
real S3, and the one way every test file runs the tool (``Tool``) and reads a tree (``tree``)."""

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
VECTORS = TESTS / "vectors"   # copied from the existing tool's backups (shared/vectors)
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(TESTS))

import encrypted_s3_backup as esb  # noqa: E402

# ---------------------------------------------------------------------------------------
# The test secrets
# ---------------------------------------------------------------------------------------

# PASSWORD and SALT are also the inputs of the known answers of docs/FORMAT.md section 6
# (test_crypto.py, test_codec.py): other values would change those answers.
PASSWORD = "correct horse battery staple"
SALT = "000102030405060708090a0b0c0d0e0f"          # as configured: 32 hex digits
SALT_BYTES = bytes.fromhex(SALT)
S3_SECRET = "AwsS3cretKey-Zq9Xw7Vv5Uu3"             # a made-up S3 secret key, easy to spot


def make_codec(**fields) -> "esb.Codec":
    """A Codec of PASSWORD and SALT; keyword arguments replace any field."""
    return esb.Codec(**{"password": PASSWORD, "salt": SALT_BYTES, **fields})


# ---------------------------------------------------------------------------------------
# The planner, three ways: as it plans held lists, walked listings and compact columns
# ---------------------------------------------------------------------------------------

def plan_three_ways(source, objects, today, keep_days, blind=(), versions_keep_days=0):
    """esb.plan_backup of the listings, checked to be exactly the plan a run makes when it
    walks the listings as they come in key order (in_plan_order, plan_walked), and the
    one it makes from compact Listing columns (encrypted names, or a storage that does not
    list in order).  Objects whose key is not their plaintext name (an encrypted name)
    cannot be walked in order: for those only the columns are compared."""
    source = list(source)
    objects = [esb.stored_object(o.key, o.size, o.name, o.storage_class) for o in objects]
    expected = esb.plan_backup(source, objects, today, keep_days, blind, versions_keep_days)

    def planned(files, stored):
        return esb.plan_walked(files, stored, today, keep_days, list(blind),
                               versions_keep_days)

    files, held = esb.Listing(), esb.Listing()
    for entry in source:
        files.append(*entry)
    plain = all(esb.is_plaintext_key(o.key, o.name) for o in objects)
    for obj in objects:
        name = "" if plain else esb.format_plain_name(obj.name) + esb.name_suffix(obj.name)
        held.append(obj.key, obj.size, 0, obj.storage_class, name)
    assert planned(files.files_in_order(), held.objects_in_order()) == expected
    if plain:
        report = esb.ListReport()
        walked = planned(
            esb.in_plan_order(esb.listed_files(sorted(source, key=lambda e: e.key)), "src"),
            esb.in_plan_order(esb.listed_objects(
                (esb.Entry(o.key, o.size, 0, o.storage_class)
                 for o in sorted(objects, key=lambda o: o.key)),
                esb.Codec(), report), "dest"))
        assert walked == expected and report == esb.ListReport()
    return expected


# ---------------------------------------------------------------------------------------
# Vectors
# ---------------------------------------------------------------------------------------

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


VECTOR_LIST = load_vectors()
VECTOR_IDS = [name for name, _, _ in VECTOR_LIST]


@pytest.fixture(params=VECTOR_LIST, ids=VECTOR_IDS)
def vector(request):
    return request.param


# ---------------------------------------------------------------------------------------
# Configuration through the environment
# ---------------------------------------------------------------------------------------

# Every variable the script reads configuration from, derived from its configuration keys
# (a key added there is covered here without a change).
CONFIG_VARIABLES = frozenset(esb.config_variables())


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """Our configuration comes from the environment too: no test sees a stray variable.
    Nor what an earlier test's run left in this process: requests counted and not taken
    (`--list` prints no request counts), keys being derived ahead."""
    for name in CONFIG_VARIABLES & set(os.environ):
        monkeypatch.delenv(name)
    esb.take_requests()
    esb.key_derived()


def set_env(monkeypatch, **env):
    """Set configuration environment variables for one test (None removes one)."""
    for key, value in env.items():
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, str(value))


def process_env(**env) -> dict:
    """The environment of a child process that runs the script: this process's without any
    configuration variable, plus ``env`` (values as text; None leaves a variable out)."""
    out = {key: value for key, value in os.environ.items() if key not in CONFIG_VARIABLES}
    out.update({key: str(value) for key, value in env.items() if value is not None})
    return out


def unmeasured(env) -> dict:
    """``env`` for a child Python whose coverage is not measured (see .coveragerc): one
    that drops to "nobody" could not write its data and would print a traceback at exit;
    one killed with SIGKILL may be cut while writing it, and leave a broken data file."""
    return {key: value for key, value in env.items()
            if key not in ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")}


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


def decoded(src, size, md5, codec) -> bytes:
    """esb.decode() of an object stream into memory: the original bytes, handed out only
    once every check has passed (decode raises IntegrityError otherwise)."""
    out = io.BytesIO()
    esb.decode(src, size, md5, codec, out)
    return out.getvalue()


# ---------------------------------------------------------------------------------------
# Running the tool
# ---------------------------------------------------------------------------------------

def run_main(capsys, *argv):
    """The tool in-process, as a user runs it: (exit code, stdout, stderr)."""
    code = esb.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class Tool:
    """The tool configured by environment variables and run in this process as a user runs
    it: ``tool(*argv)`` is ``(exit code, stdout, stderr)`` of ``main(argv)``, and no run may
    print PASSWORD.  The working folder is ``tmp_path``.

    Source ``tmp_path/src`` (created, empty); restore root ``tmp_path/<restore>`` (not
    created); destination ``tmp_path/dest``, or with ``bucket`` that S3 bucket, under
    ``base_path`` and reached at ``endpoint_url`` when given (a fault-injecting proxy, say)
    instead of the bucket's own.  ``processes`` is used for backups and restores; the
    encryption type and encrypt_filenames are set only when given (else the defaults);
    ``env`` holds any further variables (None removes one)."""

    def __init__(self, monkeypatch, capsys, tmp_path, bucket=None, *, base_path=None,
                 endpoint_url=None, restore="restore", processes=2, encryption_type=None,
                 encrypt_filenames=None, **env):
        self.monkeypatch, self.capsys, self.tmp, self.bucket = monkeypatch, capsys, tmp_path, bucket
        self.src, self.restore = tmp_path / "src", tmp_path / restore
        self.src.mkdir()
        config = {"SRC_LOCAL_PATH": self.src, "RESTORE_LOCAL_PATH": self.restore,
                  "ENCRYPTION_PASSWORD": PASSWORD, "ENCRYPTION_SALT": SALT,
                  "BACKUP_PROCESSES": processes, "RESTORE_PROCESSES": processes,
                  "ENCRYPTION_TYPE": encryption_type}
        if encrypt_filenames is not None:
            config["ENCRYPT_FILENAMES"] = "true" if encrypt_filenames else "false"
        if bucket is None:
            self.dest = tmp_path / "dest"
            config["DEST_LOCAL_PATH"] = self.dest
        else:
            self.dest = None
            config.update(s3_env("DEST", bucket, base_path))
            if endpoint_url:
                config["DEST_ENDPOINT_URL"] = endpoint_url
        config.update(env)
        self.set(**config)
        monkeypatch.chdir(tmp_path)

    def set(self, **env):
        set_env(self.monkeypatch, **env)

    def __call__(self, *argv):
        code, out, err = run_main(self.capsys, *argv)
        assert PASSWORD not in out + err             # whatever the run, the password never shows
        return code, out, err

    def write(self, rel, data, mtime=1_700_000_000):
        """A source file ``rel`` holding ``data``, modified at ``mtime``."""
        put_file(self.src / rel, data, mtime)

    def config(self) -> "esb.Config":
        """The configuration the environment gives now (a destination is all it needs)."""
        return esb.load_config(None, needs=("dest",))[0]

    def codec(self, **changes) -> "esb.Codec":
        """The Codec configured now; keyword arguments replace any field."""
        return dataclasses.replace(self.config().codec, **changes)

    def storage(self):
        return esb.make_storage(self.config().dest)

    def keys(self):
        """Every object key on the destination, sorted."""
        return sorted(e.key for e in self.storage().list_files(esb.ListReport()))

    def objects(self):
        """{path: BackupName} of every object on the destination."""
        codec = self.codec()
        names = [esb.decode_name(entry.key, codec)
                 for entry in self.storage().list_files(esb.ListReport())]
        return {name.path: name for name in names}

    def restored(self):
        """{relative path: content} of the restored files."""
        return tree(self.restore)


@pytest.fixture
def make_tool(monkeypatch, capsys, tmp_path):
    """``make_tool(bucket=None, **options)``: a Tool for this test (see Tool for options)."""
    return functools.partial(Tool, monkeypatch, capsys, tmp_path)


@pytest.fixture
def local_tool(make_tool):
    """The tool with a local destination and the default settings."""
    return make_tool()


# ---------------------------------------------------------------------------------------
# Files and trees
# ---------------------------------------------------------------------------------------

def put_file(path, data, mtime):
    """Write ``data`` to ``path`` (folders made as needed), modified at ``mtime``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


def _md5(path):
    return hashlib.md5(path.read_bytes())


FILE_FACTS = {
    "bytes": lambda path, info: path.read_bytes(),
    "sha256": lambda path, info: hashlib.sha256(path.read_bytes()).hexdigest(),
    "md5+mtime": lambda path, info: (_md5(path).hexdigest(), int(info.st_mtime)),
    # what a backup object's name holds
    "size+mtime+md5": lambda path, info: (info.st_size, int(info.st_mtime), _md5(path).digest()),
}


def tree(root, how="bytes", *, skip_temp=False):
    """{relative path ("/"-separated): facts} of the regular files under ``root``; symbolic
    links are neither followed nor listed, and a missing ``root`` is an empty tree.

    The facts of a file, by ``how``: "bytes" its content, "sha256" the hex SHA-256 of it,
    "md5+mtime" (hex MD5, whole-second mtime), "size+mtime+md5" (size, whole-second mtime,
    MD5 digest: what a backup name holds).  ``skip_temp`` leaves out our temporary files."""
    facts = FILE_FACTS[how]
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if skip_temp and is_temp(name):
                continue
            path = Path(folder, name)
            info = os.lstat(path)
            if stat.S_ISREG(info.st_mode):
                out[path.relative_to(root).as_posix()] = facts(path, info)
    return out


def snapshot(root, skip=None):
    """Everything under ``root`` but the ``skip`` subtree, folders and links included:
    {relative path: (mode, size, mtime in ns, content of a regular file)}.  Two equal
    snapshots: nothing there was added, removed, changed or even touched."""
    out = {}
    for folder, dirs, files in os.walk(root):
        if skip is not None and Path(folder) == Path(skip):
            dirs[:] = []
            continue
        for name in dirs + files:
            path = Path(folder, name)
            if skip is not None and path == Path(skip):
                continue
            info = os.lstat(path)
            content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
            out[path.relative_to(root).as_posix()] = (info.st_mode, info.st_size,
                                                      info.st_mtime_ns, content)
    return out


def is_temp(name):
    """Whether a file name (or path, or object key) is one of our temporary files."""
    return esb.is_temp_name(os.path.basename(name))


def temp_files(root):
    """Our temporary files and folders anywhere under ``root``: sorted paths."""
    return sorted(os.path.join(folder, name) for folder, dirs, files in os.walk(root)
                  for name in dirs + files if is_temp(name))


# ---------------------------------------------------------------------------------------
# A folder every user can reach (for a child process that drops to "nobody")
# ---------------------------------------------------------------------------------------

NOBODY = 65534          # uid and gid of "nobody"


def reachable_by_everyone(folder) -> bool:
    """Whether any user may pass through ``folder`` and each folder above it."""
    path = Path(os.path.realpath(folder))
    for each in (path, *path.parents):
        try:
            mode = os.stat(each).st_mode
        except OSError:
            return False
        if not stat.S_ISDIR(mode) or not mode & stat.S_IXOTH:
            return False
    return True


@contextlib.contextmanager
def folder_for_everyone(prefix):
    """A fresh folder, mode 0755, in a place any user can reach; removed afterwards, with
    whatever a test left in it, unreadable folders included.

    pytest's tmp_path, and TMPDIR itself when it is a private (0700) folder, cannot be
    reached by another user; the usual temporary folders of the machine are tried then."""
    places = [tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"]
    place = next((p for p in places if reachable_by_everyone(p) and os.access(p, os.W_OK)),
                 None)
    if place is None:
        pytest.fail(f"no folder that every user can reach to work in (tried {places}): "
                    "a test that drops to an unprivileged user needs one", pytrace=False)
    folder = tempfile.mkdtemp(prefix=prefix, dir=place)
    try:
        os.chmod(folder, 0o755)
        yield folder
    finally:
        for parent, dirs, _ in os.walk(folder):      # top-down: opened before entered
            for path in (os.path.join(parent, name) for name in dirs):
                if not os.path.islink(path):
                    os.chmod(path, 0o700)
        shutil.rmtree(folder)


def give_to_nobody(top):
    """Make ``top`` and everything under it belong to "nobody" (links themselves)."""
    for folder, dirs, files in os.walk(top):
        for path in [folder, *(os.path.join(folder, name) for name in dirs + files)]:
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)


# ---------------------------------------------------------------------------------------
# The coverage floor applies to a run of the whole suite
# ---------------------------------------------------------------------------------------

_DESELECTED = pytest.StashKey[int]()


def pytest_deselected(items):
    for item in items[:1]:
        item.config.stash[_DESELECTED] = item.config.stash.get(_DESELECTED, 0) + len(items)


def whole_suite(session) -> bool:
    """Whether this run has every test: each test file collected, none named by node id,
    nothing deselected (-k, -m, --deselect, --last-failed ...)."""
    files = {Path(item.path) for item in session.items}
    return (files == set(TESTS.glob("test_*.py"))
            and not any("::" in str(arg) for arg in session.config.args)
            and not session.config.stash.get(_DESELECTED, 0))


def floor_plugin(config):
    """pytest-cov, when the floor is .coveragerc's (one given on the command line with
    --cov-fail-under is kept as it is); else None."""
    plugin = config.pluginmanager.get_plugin("_cov")
    if plugin is None or config.getoption("cov_fail_under", None) is not None:
        return None
    return plugin


def pytest_collection_finish(session):
    """The floor of .coveragerc ([report] fail_under) is for the whole suite: a run of some
    of the tests measures less of the script by design, so it shows its figure and passes.
    Run by pytest-xdist, the tests are collected in its workers, while the controller
    applies the floor: each worker tells it what it collected (pytest_testnodedown)."""
    whole = whole_suite(session)
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["whole_suite"] = whole
        return
    plugin = floor_plugin(session.config)
    if plugin is not None and not whole:
        plugin.options.cov_fail_under = None


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist's controller: a worker that had less than the whole suite (or died
    before it could say) drops the floor; the run of a dead worker fails anyway."""
    plugin = floor_plugin(node.config)
    if plugin is not None and not getattr(node, "workeroutput", {}).get("whole_suite"):
        plugin.options.cov_fail_under = None


from s3_server import s3_bucket, s3_server  # noqa: E402,F401  (fixtures: a real S3 server)
from ping_server import closed_url, ping_server  # noqa: E402,F401  (a recording HTTP server)
from moto_server import moto_bucket, moto_server  # noqa: E402,F401  (S3 with archive tiers)
