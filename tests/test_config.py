"""Configuration: load_config() and read_raw_config() over JSON files and the environment."""

import json
import os
import tempfile

import pytest
from conftest import PASSWORD, S3_SECRET, SALT, esb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The smallest valid configuration, from the environment alone.
BASE_ENV = {"SRC_LOCAL_PATH": "/srv/data", "DEST_LOCAL_PATH": "/mnt/backup",
            "ENCRYPTION_PASSWORD": PASSWORD}


@pytest.fixture(autouse=True)
def _empty_working_dir(tmp_path, monkeypatch):
    """No stray config.json: path=None finds only what a test writes into tmp_path."""
    monkeypatch.chdir(tmp_path)


def write_config(folder, data, name="settings.json", mode=0o600):
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    os.chmod(path, mode)
    return str(path)


def load_env(environ, needs=("src", "dest")):
    """Environment only: no file, path None."""
    config, _ = esb.load_config(None, environ, needs)
    return config


def env(base=BASE_ENV, **changes):
    """``base`` with changes; a value of None removes the variable."""
    out = dict(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def config_error(path=None, environ=None, needs=("src", "dest")):
    """The ConfigError message a configuration produces (and its exit code is 2)."""
    with pytest.raises(esb.ConfigError) as caught:
        esb.load_config(path, {} if environ is None else environ, needs)
    assert caught.value.exit_code == 2
    return str(caught.value)


# ----------------------------------------------------------------------------------------
# A JSON file with every key
# ----------------------------------------------------------------------------------------

S3_DEST = {"aws_access_key_id": "AKIADEST", "aws_secret_access_key": S3_SECRET,
           "s3_bucket": "my-backups", "base_path": "host1/", "endpoint_url": "https://s3.example",
           "signature_version": "s3v4", "region_name": "eu-central-1",
           "storage_class": "STANDARD_IA"}
S3_RESTORE = {"aws_access_key_id": "AKIARESTORE", "aws_secret_access_key": S3_SECRET + "-2",
              "s3_bucket": "restored", "base_path": "r/", "endpoint_url": "http://127.0.0.1:9000",
              "signature_version": "s3", "region_name": "us-east-1",
              "storage_class": "GLACIER_IR"}
FULL = {
    "src": {"local_path": "/srv/data"},
    "dest": S3_DEST,
    "restore": S3_RESTORE,
    "encryption_password": PASSWORD,
    "encryption_salt": SALT,
    "encrypt_filenames": True,
    "backup_processes": 3,
    "restore_processes": 12,
    "restore_permissions": "umask",
    "deleted_keep_days": 30,
    "ignore_regex": ["^tmp/", r"\.swp$"],
    "lzma_level": 9,
    "gzip_level": 1,
    "compress": False,
    "encrypt": True,
    "encryption_type": "cha",
    "versions_keep_days": 45,
    "requests_in_flight": 16,
    "healthcheck_url": "https://hc-ping.com/0f5e-check-key",
    "notify_url": "https://ntfy.sh/backups?tpl=1",
    "notify_on": "always",
    "metrics_file": "/var/lib/node_exporter/textfile/esb.prom",
    "pre_command": "pg_dump -f /data/db.sql app",
    "post_command": "rm -f /data/db.sql",
    "command_timeout": 600,
    "bandwidth_limit": "2M",
    "thaw_days": 3,
    "thaw_tier": "Expedited",
    "object_lock_mode": "compliance",
    "object_lock_days": 90,
}


def test_full_file_uses_every_key():
    # The fixture itself is exhaustive: every top-level key and every storage key.
    assert set(FULL) == set(esb.setting_keys()) | set(esb.STORAGE_SECTIONS)
    assert set(FULL["src"]) | set(S3_DEST) == set(esb.storage_keys())


def test_full_file_is_parsed_into_the_right_types(tmp_path):
    config, warnings = esb.load_config(write_config(tmp_path, FULL), {})
    assert warnings == []
    assert config.src == esb.StorageConfig(local_path="/srv/data")
    assert config.dest == esb.StorageConfig(**S3_DEST)
    assert config.restore == esb.StorageConfig(**S3_RESTORE)
    assert config.dest.s3_bucket and not config.src.s3_bucket
    assert config.codec == esb.Codec(
        compress=False, encrypt=True, encryption_type="cha", password=PASSWORD,
        salt=bytes.fromhex(SALT), encrypt_filenames=True, lzma_level=9, gzip_level=1)
    assert config.backup_processes == 3 and config.restore_processes == 12
    assert config.deleted_keep_days == 30 and config.versions_keep_days == 45
    assert config.requests_in_flight == 16
    assert config.ignore_regex == ("^tmp/", r"\.swp$")
    assert isinstance(config.ignore_regex, tuple)
    assert config.alerts == esb.Alerts(
        healthcheck_url="https://hc-ping.com/0f5e-check-key",
        notify_url="https://ntfy.sh/backups?tpl=1", notify_on="always",
        metrics_file="/var/lib/node_exporter/textfile/esb.prom")
    assert config.pre_command == "pg_dump -f /data/db.sql app"
    assert config.post_command == "rm -f /data/db.sql" and config.command_timeout == 600
    assert config.bandwidth_limit == 2 * 1024 * 1024 and config.throttle is None
    assert config.thaw_days == 3 and config.thaw_tier == "Expedited"
    assert config.restore_permissions == "umask"
    assert config.object_lock == esb.ObjectLock("COMPLIANCE", 90)


def test_old_tools_full_example_with_nulls_loads_unchanged(tmp_path):
    # The shape of the existing tool's config.json.local-to-s3-full-example.
    old = {
        "src": {"local_path": "/backup/files/from/here"},
        "dest": {"aws_access_key_id": "my_access_key", "aws_secret_access_key": S3_SECRET,
                 "s3_bucket": "my-s3-bucket", "base_path": None, "endpoint_url": None,
                 "signature_version": None, "region_name": None},
        "encryption_password": PASSWORD, "encryption_salt": None, "encrypt_filenames": False,
        "backup_processes": 5, "restore_processes": 8, "deleted_keep_days": None,
        "ignore_regex": ["^optional/ignore/files/in/this/folder/"],
        "lzma_level": 6, "gzip_level": 6, "compress": True, "encrypt": True,
        "encryption_type": "aes",
    }
    config, warnings = esb.load_config(write_config(tmp_path, old), {})
    assert warnings == []
    assert config.dest == esb.StorageConfig(aws_access_key_id="my_access_key",
                                            aws_secret_access_key=S3_SECRET,
                                            s3_bucket="my-s3-bucket")
    assert config.codec.salt is None and config.deleted_keep_days is None


def test_default_config_json_in_the_working_directory_is_read(tmp_path):
    write_config(tmp_path, {"src": {"local_path": "/a"}, "dest": {"local_path": "/b"},
                            "encryption_password": PASSWORD}, name="config.json")
    config, _ = esb.load_config(None, {})
    assert config.src.local_path == "/a" and config.dest.local_path == "/b"


# ----------------------------------------------------------------------------------------
# The environment alone, and over a file
# ----------------------------------------------------------------------------------------

def test_environment_alone_is_the_config():
    config = load_env({
        "SRC_LOCAL_PATH": "/srv/data",
        "DEST_S3_BUCKET": "bucket", "DEST_AWS_ACCESS_KEY_ID": "AKIA",
        "DEST_AWS_SECRET_ACCESS_KEY": S3_SECRET, "DEST_BASE_PATH": "host/",
        "DEST_ENDPOINT_URL": "https://minio.example", "DEST_SIGNATURE_VERSION": "s3v4",
        "DEST_REGION_NAME": "us-east-1", "DEST_STORAGE_CLASS": "STANDARD",
        "RESTORE_LOCAL_PATH": "/restore",
        "ENCRYPTION_PASSWORD": PASSWORD, "ENCRYPTION_SALT": SALT, "ENCRYPTION_TYPE": "CHA",
        "ENCRYPT_FILENAMES": "yes", "ENCRYPT": "true", "COMPRESS": "1",
        "BACKUP_PROCESSES": "2", "RESTORE_PROCESSES": "16", "DELETED_KEEP_DAYS": "7",
        "IGNORE_REGEX": '["^a/", "b$"]', "LZMA_LEVEL": "3", "GZIP_LEVEL": "4",
    })
    assert config.src == esb.StorageConfig(local_path="/srv/data")
    assert config.dest == esb.StorageConfig(
        aws_access_key_id="AKIA", aws_secret_access_key=S3_SECRET, s3_bucket="bucket",
        base_path="host/", endpoint_url="https://minio.example", signature_version="s3v4",
        region_name="us-east-1", storage_class="STANDARD")
    assert config.restore == esb.StorageConfig(local_path="/restore")
    assert config.codec == esb.Codec(
        compress=True, encrypt=True, encryption_type="cha", password=PASSWORD,
        salt=bytes.fromhex(SALT), encrypt_filenames=True, lzma_level=3, gzip_level=4)
    assert (config.backup_processes, config.restore_processes) == (2, 16)
    assert config.deleted_keep_days == 7
    assert config.ignore_regex == ("^a/", "b$")


@pytest.mark.parametrize("section", esb.STORAGE_SECTIONS)
def test_every_s3_key_of_every_storage_comes_from_the_environment(section):
    prefix = section.upper() + "_"
    values = {key: f"{section}-{key}" for key in esb.storage_keys() if key != "local_path"}
    environ = env(**{prefix + "LOCAL_PATH": None})
    environ.update({prefix + key.upper(): value for key, value in values.items()})
    config = load_env(environ)
    assert getattr(config, section) == esb.StorageConfig(**values)


def test_load_config_reads_os_environ_by_default(monkeypatch):
    for key, value in BASE_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("BACKUP_PROCESSES", "4")
    config, _ = esb.load_config(None)
    assert config.src.local_path == "/srv/data" and config.backup_processes == 4


def test_environment_overrides_the_file(tmp_path):
    path = write_config(tmp_path, {
        "src": {"local_path": "/file/src"},
        "dest": {"s3_bucket": "file-bucket", "region_name": "eu-west-1"},
        "encryption_password": "file-password", "backup_processes": 3, "compress": True,
        "lzma_level": 2, "ignore_regex": ["^file/"]})
    config, _ = esb.load_config(path, {
        "SRC_LOCAL_PATH": "/env/src", "DEST_S3_BUCKET": "env-bucket",
        "DEST_STORAGE_CLASS": "STANDARD_IA", "ENCRYPTION_PASSWORD": PASSWORD,
        "BACKUP_PROCESSES": "9", "COMPRESS": "false", "IGNORE_REGEX": "^env/"})
    assert config.src.local_path == "/env/src"
    assert config.dest == esb.StorageConfig(s3_bucket="env-bucket", region_name="eu-west-1",
                                            storage_class="STANDARD_IA")
    assert config.codec.password == PASSWORD
    assert config.backup_processes == 9
    assert config.codec.compress is False
    assert config.codec.lzma_level == 2                    # only in the file: kept
    assert config.ignore_regex == ("^env/",)


# An empty variable counts as unset: docker-compose writes "ENCRYPT: ${ENCRYPT}" as "" when
# the variable is unset, and the existing tool ignored empty variables too.


def test_empty_encrypt_and_compress_variables_keep_the_defaults():
    # docker-compose writes "ENCRYPT: ${ENCRYPT}" as an empty value when it is unset.
    codec = load_env(env(ENCRYPT="", COMPRESS="")).codec
    assert codec.encrypt is True
    assert codec.compress is True


def test_empty_variables_do_not_erase_file_values(tmp_path):
    path = write_config(tmp_path, {"src": {"local_path": "/a"}, "dest": {"local_path": "/b"},
                                   "encryption_password": PASSWORD, "backup_processes": 3})
    config, _ = esb.load_config(path, {"ENCRYPTION_PASSWORD": "", "BACKUP_PROCESSES": "",
                                       "DEST_LOCAL_PATH": ""})
    assert config.codec.password == PASSWORD
    assert config.backup_processes == 3
    assert config.dest.local_path == "/b"


# ----------------------------------------------------------------------------------------
# String coercion
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("word", ["false", "no", "0", "off", "False", "NO", " off ", "n"])
def test_false_words(word):
    config = load_env(env(COMPRESS=word, ENCRYPT=word, ENCRYPT_FILENAMES=word))
    assert config.codec.compress is False
    assert config.codec.encrypt is False
    assert config.codec.encrypt_filenames is False


@pytest.mark.parametrize("word", ["true", "yes", "1", "on", "TRUE", "Yes", " true "])
def test_true_words(word):
    config = load_env(env(COMPRESS=word, ENCRYPT=word, ENCRYPT_FILENAMES=word,
                          ENCRYPTION_SALT=SALT))
    assert config.codec.compress is True
    assert config.codec.encrypt is True
    assert config.codec.encrypt_filenames is True


def test_booleans_as_strings_in_the_file(tmp_path):
    path = write_config(tmp_path, {"src": {"local_path": "/a"}, "dest": {"local_path": "/b"},
                                   "compress": "false", "encrypt": "no"})
    config, _ = esb.load_config(path, {})
    assert config.codec.compress is False and config.codec.encrypt is False


@pytest.mark.parametrize("word", ["maybe", "2", "enabled"])
def test_a_word_that_is_neither_true_nor_false_is_an_error(word):
    message = config_error(environ=env(COMPRESS=word))
    assert "compress" in message and "COMPRESS" in message and repr(word) in message


def test_numbers_as_text():
    config = load_env(env(BACKUP_PROCESSES=" 7 ", RESTORE_PROCESSES="32",
                          DELETED_KEEP_DAYS="90", LZMA_LEVEL="1", GZIP_LEVEL="9"))
    assert (config.backup_processes, config.restore_processes) == (7, 32)
    assert config.deleted_keep_days == 90
    assert (config.codec.lzma_level, config.codec.gzip_level) == (1, 9)


def test_numbers_as_text_in_the_file(tmp_path):
    path = write_config(tmp_path, {"src": {"local_path": "/a"}, "dest": {"local_path": "/b"},
                                   "encrypt": False, "backup_processes": "2",
                                   "deleted_keep_days": "14"})
    config, _ = esb.load_config(path, {})
    assert config.backup_processes == 2 and config.deleted_keep_days == 14


def test_deleted_keep_days_zero_is_zero_not_unset():
    assert load_env(env(DELETED_KEEP_DAYS="0")).deleted_keep_days == 0


@pytest.mark.parametrize("text", ["", "null", "None"])
def test_deleted_keep_days_empty_or_null_text_means_forever(text):
    assert load_env(env(DELETED_KEEP_DAYS=text)).deleted_keep_days is None


def test_encryption_type_is_case_insensitive():
    assert load_env(env(ENCRYPTION_TYPE="AES")).codec.encryption_type == "aes"


# ----------------------------------------------------------------------------------------
# ignore_regex
# ----------------------------------------------------------------------------------------

def test_ignore_regex_from_the_environment_as_a_json_list():
    config = load_env(env(IGNORE_REGEX=r'["^cache/", "\\.tmp$", "^a,b"]'))
    assert config.ignore_regex == ("^cache/", r"\.tmp$", "^a,b")


@pytest.mark.parametrize("pattern", ["^cache/", r".*\.tmp$", "a,b", "node_modules/"])
def test_ignore_regex_from_the_environment_as_one_pattern(pattern):
    # Regression: the old tool split this string into single characters.
    assert load_env(env(IGNORE_REGEX=pattern)).ignore_regex == (pattern,)


def test_ignore_regex_one_pattern_starting_with_a_character_class():
    assert load_env(env(IGNORE_REGEX=r"[.]git/")).ignore_regex == (r"[.]git/",)


def test_ignore_regex_as_one_string_in_the_file(tmp_path):
    path = write_config(tmp_path, {"src": {"local_path": "/a"}, "dest": {"local_path": "/b"},
                                   "encryption_password": PASSWORD, "ignore_regex": "^tmp/"})
    config, _ = esb.load_config(path, {})
    assert config.ignore_regex == ("^tmp/",)


def test_ignore_regex_empty_means_none():
    assert load_env(env(IGNORE_REGEX="")).ignore_regex == ()
    assert load_env(env(IGNORE_REGEX="[]")).ignore_regex == ()


# ----------------------------------------------------------------------------------------
# Defaults
# ----------------------------------------------------------------------------------------

def test_defaults():
    config = load_env(BASE_ENV)
    assert config.backup_processes == 5
    assert config.restore_processes == 8
    assert config.deleted_keep_days is None
    assert config.ignore_regex == ()
    assert config.codec == esb.Codec(compress=True, encrypt=True, encryption_type="aes",
                                     password=PASSWORD, salt=None, encrypt_filenames=False,
                                     lzma_level=6, gzip_level=6)
    assert config.alerts == esb.Alerts(None, None, "failure", None)
    assert config.pre_command is config.post_command is None
    assert config.bandwidth_limit == 0
    assert config.command_timeout == esb.COMMAND_TIMEOUT == 3600


def test_a_flag_overrides_the_environment_and_the_file(tmp_path):
    path = write_config(tmp_path, {"bandwidth_limit": 1000})
    assert esb.load_config(path, BASE_ENV)[0].bandwidth_limit == 1000
    assert esb.load_config(path, env(BANDWIDTH_LIMIT="2K"))[0].bandwidth_limit == 2048
    assert esb.load_config(path, env(BANDWIDTH_LIMIT="2K"),
                           flags={"bandwidth_limit": 0})[0].bandwidth_limit == 0


def test_notify_on_and_urls_are_read_leniently_when_the_rest_is_broken(tmp_path):
    """A configuration that does not load still tells where to report that."""
    broken = env(ENCRYPTION_PASSWORD=None, HEALTHCHECK_URL="http://hc.example/k3y",
                 NOTIFY_ON="ALWAYS", METRICS_FILE="/m.prom", NOTIFY_URL="not a url")
    config_error(environ=broken)
    alerts = esb.alerts_anyway(None, broken)
    assert alerts == esb.Alerts("http://hc.example/k3y", None, "always", "/m.prom")
    bad_file = write_config(tmp_path, "{broken")
    assert esb.alerts_anyway(bad_file, broken).healthcheck_url == "http://hc.example/k3y"


# ----------------------------------------------------------------------------------------
# JSON that Python cannot hold, and arbitrary JSON: a ConfigError, never a traceback
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,why", [
    ('{"backup_processes": %s}' % ("7" * 5000), "a number in it has too many digits"),
    ("[" * 100_000 + "]" * 100_000, "it nests arrays or objects too deeply"),
    ('{"dest": {"local_path": %s}}' % ("[" * 100_000 + "]" * 100_000),
     "it nests arrays or objects too deeply")])
def test_json_that_python_cannot_hold_is_one_line_naming_the_file(tmp_path, text, why):
    path = write_config(tmp_path, text)
    message = config_error(path, BASE_ENV)
    assert message == f"config file {path} cannot be read: {why}; fix the file"
    alerts = esb.alerts_anyway(path, {**BASE_ENV, "HEALTHCHECK_URL": "http://hc.example/k"})
    assert alerts.healthcheck_url == "http://hc.example/k"      # the environment's, at least


@pytest.mark.parametrize("changes,key,said", [
    ({"backup_processes": int("9" * 4000)}, "backup_processes", "99999"),
    ({"encrypt": [[[[1]]]]}, "encrypt", "[[[[1]]]] is not true or false"),
    ({"bandwidth_limit": "9" * 400}, "bandwidth_limit", "is not a rate"),
    ({"ignore_regex": ["a{99999999999999999999}", "(" * 5000]}, "ignore_regex",
     "repetition number is too large"),
    ({"healthcheck_url": "http://[::1/ping"}, "healthcheck_url", "must be an http://"),
    ({"pre_command": "dump\x00"}, "pre_command", "holds a NUL character"),
    ({"dest": {"local_path": "/mnt/\ud800"}}, "dest.local_path", "lone surrogate"),
    ({"command_timeout": 0}, "command_timeout", "is not a whole number 1 or more"),
    ({"dest": {"s3_bucket": "b", "base_path": "caf\udce9"}}, "dest.base_path",
     "is not UTF-8 text, which S3 needs")])
def test_values_python_chokes_on_are_problems_naming_the_key(tmp_path, changes, key, said):
    path = write_config(tmp_path, {"src": {"local_path": "/a"}, "dest": {"local_path": "/b"},
                                   "encryption_password": "pw", **changes})
    lines = [line for line in config_error(path).splitlines() if line.strip().startswith(key)]
    assert any(said in line for line in lines), lines
    assert all(len(line) < 300 for line in lines), lines      # a huge value is cut short


@pytest.mark.parametrize("key", ["backup_processes", "encrypt", "ignore_regex", "pre_command"])
def test_a_value_nested_as_deep_as_json_allows_is_a_problem_naming_its_key(tmp_path, key):
    deep = "[" * 900 + "1" + "]" * 900
    text = '{"src": {"local_path": "/a"}, "dest": {"local_path": "/b"}, ' \
           '"encryption_password": "pw", "%s": %s}' % (key, deep)
    message = config_error(write_config(tmp_path, text))    # parsed, or too deep to be
    lines = message.splitlines()
    assert lines[0] in ("configuration problems:",
                        f"config file {tmp_path}/settings.json cannot be read: it nests "
                        "arrays or objects too deeply; fix the file")
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].strip().startswith(key))
    assert all(len(line) < 300 for line in lines)


def json_values():
    """Any JSON value: huge and odd numbers, any text (lone surrogates too), nesting."""
    scalars = (st.none() | st.booleans() | st.integers() | st.integers(-10, 300)
               | st.integers(10 ** 300, 10 ** 4000) | st.floats()
               | st.text(st.characters(blacklist_categories=()), max_size=20)
               | st.sampled_from(["", " ", "0", "1", "true", "off", "4M", "9" * 400, "[",
                                  '["^a/"]', "http://h/x", "http://u:p@h/x", "aes", "cha",
                                  "always", "bulk", SALT, "a{99999999999999999999}"]))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                        | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                        max_leaves=8)


def configurations():
    """A top-level object whose keys are mostly ours, each with any JSON value; storage
    sections are objects with our storage keys (or anything)."""
    storage = st.dictionaries(st.sampled_from(esb.storage_keys()) | st.text(max_size=4),
                              json_values(), max_size=4) | json_values()
    top = st.dictionaries(st.sampled_from(esb.setting_keys()) | st.text(max_size=4),
                          json_values(), max_size=8)
    return st.builds(lambda t, sections: {**t, **sections}, top,
                     st.dictionaries(st.sampled_from(esb.STORAGE_SECTIONS), storage,
                                     max_size=3))


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "config.json"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=configurations(),
       environ=st.dictionaries(st.sampled_from(sorted(esb.config_variables())),
                               st.text(st.characters(blacklist_characters="\x00"), max_size=12),
                               max_size=4))
def test_any_json_configuration_loads_or_is_a_config_error(fuzz_file, data, environ):
    fuzz_file.write_text(json.dumps(data), encoding="utf-8")
    os.chmod(fuzz_file, 0o600)
    for needs in (("src", "dest"), ("dest",)):
        try:
            config, warnings = esb.load_config(str(fuzz_file), environ, needs)
        except esb.ConfigError as exc:
            assert exc.exit_code == esb.EXIT_USAGE and exc.message
        else:
            assert isinstance(config, esb.Config) and isinstance(warnings, list)
    assert isinstance(esb.alerts_anyway(str(fuzz_file), environ), esb.Alerts)


def test_restore_defaults_to_a_private_local_folder_in_the_temp_dir():
    config = load_env(BASE_ENV)
    assert config.restore_permissions == "private"
    restore = config.restore
    assert not restore.s3_bucket
    assert restore.local_path.endswith("encrypted_s3_backup_restore")
    assert os.path.dirname(restore.local_path) == tempfile.gettempdir()


@pytest.mark.parametrize("level", ["0", ""])
def test_level_zero_or_empty_means_six(level):
    codec = load_env(env(LZMA_LEVEL=level, GZIP_LEVEL=level)).codec
    assert (codec.lzma_level, codec.gzip_level) == (6, 6)


def test_level_zero_in_the_file_means_six(tmp_path):
    path = write_config(tmp_path, {"src": {"local_path": "/a"}, "dest": {"local_path": "/b"},
                                   "encryption_password": PASSWORD, "lzma_level": 0,
                                   "gzip_level": None})
    codec = esb.load_config(path, {})[0].codec
    assert (codec.lzma_level, codec.gzip_level) == (6, 6)


def test_needs_only_what_the_action_uses():
    config = load_env(env(SRC_LOCAL_PATH=None), needs=("dest",))
    assert config.src is None and config.dest.local_path == "/mnt/backup"


# ----------------------------------------------------------------------------------------
# Validation: every problem is a ConfigError naming the key and its environment variable
# ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes,key,variable", [
    ({"ENCRYPTION_TYPE": "des"}, "encryption_type", "ENCRYPTION_TYPE"),
    ({"ENCRYPTION_SALT": "abc"}, "encryption_salt", "ENCRYPTION_SALT"),
    ({"ENCRYPTION_SALT": SALT[:-2]}, "encryption_salt", "ENCRYPTION_SALT"),
    ({"ENCRYPTION_SALT": SALT + "00"}, "encryption_salt", "ENCRYPTION_SALT"),
    ({"ENCRYPTION_SALT": "zz" * 16}, "encryption_salt", "ENCRYPTION_SALT"),
    ({"ENCRYPTION_PASSWORD": None}, "encryption_password", "ENCRYPTION_PASSWORD"),
    ({"ENCRYPTION_PASSWORD": "pass\u0100word"}, "encryption_password", "ENCRYPTION_PASSWORD"),
    ({"ENCRYPTION_PASSWORD": "pass\u20acword"}, "encryption_password", "ENCRYPTION_PASSWORD"),
    ({"ENCRYPT": "false", "ENCRYPT_FILENAMES": "true"}, "encrypt_filenames",
     "ENCRYPT_FILENAMES"),
    ({"LZMA_LEVEL": "high"}, "lzma_level", "LZMA_LEVEL"),
    ({"LZMA_LEVEL": "10"}, "lzma_level", "LZMA_LEVEL"),
    ({"LZMA_LEVEL": "-1"}, "lzma_level", "LZMA_LEVEL"),
    ({"GZIP_LEVEL": "2.5"}, "gzip_level", "GZIP_LEVEL"),
    ({"GZIP_LEVEL": "11"}, "gzip_level", "GZIP_LEVEL"),
    ({"BACKUP_PROCESSES": "0"}, "backup_processes", "BACKUP_PROCESSES"),
    ({"BACKUP_PROCESSES": "many"}, "backup_processes", "BACKUP_PROCESSES"),
    ({"RESTORE_PROCESSES": "-4"}, "restore_processes", "RESTORE_PROCESSES"),
    ({"RESTORE_PROCESSES": "1e3"}, "restore_processes", "RESTORE_PROCESSES"),
    ({"DELETED_KEEP_DAYS": "-1"}, "deleted_keep_days", "DELETED_KEEP_DAYS"),
    ({"DELETED_KEEP_DAYS": "a week"}, "deleted_keep_days", "DELETED_KEEP_DAYS"),
    ({"IGNORE_REGEX": "(unclosed"}, "ignore_regex", "IGNORE_REGEX"),
    ({"IGNORE_REGEX": '["ok", "*bad"]'}, "ignore_regex", "IGNORE_REGEX"),
    ({"IGNORE_REGEX": '["broken json"'}, "ignore_regex", "IGNORE_REGEX"),
    ({"SRC_LOCAL_PATH": None}, "src", "SRC_LOCAL_PATH"),
    ({"DEST_LOCAL_PATH": None}, "dest", "DEST_S3_BUCKET"),
    ({"HEALTHCHECK_URL": "hc-ping.com/key"}, "healthcheck_url", "HEALTHCHECK_URL"),
    ({"NOTIFY_URL": "http:///no-host"}, "notify_url", "NOTIFY_URL"),
    ({"NOTIFY_URL": "https://host:port/x"}, "notify_url", "NOTIFY_URL"),
    ({"NOTIFY_ON": "never"}, "notify_on", "NOTIFY_ON"),
    ({"BANDWIDTH_LIMIT": "fast"}, "bandwidth_limit", "BANDWIDTH_LIMIT"),
    ({"BANDWIDTH_LIMIT": "-5M"}, "bandwidth_limit", "BANDWIDTH_LIMIT"),
])
def test_validation_problem_names_key_and_variable(changes, key, variable):
    message = config_error(environ=env(**changes))
    assert key in message
    assert variable in message


def test_missing_password_is_fine_when_encrypt_is_off():
    config = load_env(env(ENCRYPTION_PASSWORD=None, ENCRYPT="false"))
    assert config.codec.encrypt is False and config.codec.password == ""


@pytest.mark.parametrize("etype,password", [("aes", "caf\u00e9 \u00ff"), ("cha", "pass\u20acword"),
                                            ("cha", "\u65e5\u672c")])
def test_passwords_each_cipher_can_use(etype, password):
    codec = load_env(env(ENCRYPTION_TYPE=etype, ENCRYPTION_PASSWORD=password)).codec
    assert codec.password == password


STORAGE_PROBLEMS = [
    # neither local_path nor s3_bucket
    ({"DEST_LOCAL_PATH": None, "DEST_BASE_PATH": "x/"}, ["DEST_LOCAL_PATH", "DEST_S3_BUCKET"]),
    # both
    ({"DEST_S3_BUCKET": "bucket"}, ["DEST_LOCAL_PATH", "DEST_S3_BUCKET"]),
    # only one of the two S3 keys
    ({"DEST_LOCAL_PATH": None, "DEST_S3_BUCKET": "b", "DEST_AWS_ACCESS_KEY_ID": "AKIA"},
     ["DEST_AWS_SECRET_ACCESS_KEY"]),
    ({"DEST_LOCAL_PATH": None, "DEST_S3_BUCKET": "b", "DEST_AWS_SECRET_ACCESS_KEY": S3_SECRET},
     ["DEST_AWS_ACCESS_KEY_ID"]),
]


@pytest.mark.parametrize("changes", [changes for changes, _ in STORAGE_PROBLEMS])
def test_storage_problem_is_an_error_naming_the_storage(changes):
    message = config_error(environ=env(**changes))
    assert "dest" in message
    assert "local_path" in message or "aws_access_key_id" in message


@pytest.mark.parametrize("changes,variables", STORAGE_PROBLEMS)
def test_storage_problem_names_the_real_environment_variables(changes, variables):
    message = config_error(environ=env(**changes))
    assert "environment DEST)" not in message
    for variable in variables:
        assert variable in message


def test_unknown_storage_key_is_an_error_naming_it(tmp_path):
    path = write_config(tmp_path, {"src": {"local_path": "/a"},
                                   "dest": {"local_path": "/b", "bucket": "x"},
                                   "encryption_password": PASSWORD})
    message = config_error(path)
    assert "dest.bucket" in message and "DEST_BUCKET" in message


def test_storage_that_is_not_an_object_is_an_error(tmp_path):
    path = write_config(tmp_path, {"src": {"local_path": "/a"}, "dest": "/b",
                                   "encryption_password": PASSWORD})
    assert "'dest'" in config_error(path)


def test_non_text_password_is_an_error(tmp_path):
    path = write_config(tmp_path, {"src": {"local_path": "/a"}, "dest": {"local_path": "/b"},
                                   "encryption_password": ["not", "text"]})
    assert "encryption_password" in config_error(path)


def test_invalid_json_names_the_file_and_line(tmp_path):
    path = write_config(tmp_path, '{\n  "src": {"local_path": "/a"},\n}\n')
    message = config_error(path)
    assert path in message
    assert "line 3" in message


def test_invalid_json_in_the_default_file_is_an_error(tmp_path):
    write_config(tmp_path, "{oops", name="config.json")
    assert "config.json" in config_error(None)


def test_file_holding_a_json_list_is_an_error(tmp_path):
    path = write_config(tmp_path, '[{"src": {"local_path": "/a"}}]')
    message = config_error(path)
    assert path in message and "object" in message


def test_explicit_config_path_that_does_not_exist_is_an_error_without_variables(tmp_path):
    missing = str(tmp_path / "nope.json")
    message = config_error(missing, {"HOME": "/root", "PATH": "/usr/bin"})
    assert missing in message and "--config" in message


def test_explicit_config_path_that_does_not_exist_with_variables_uses_them(tmp_path):
    """Like the existing tool, which never opens the file while a variable is set."""
    missing = str(tmp_path / "nope.json")
    config, warnings = esb.load_config(missing, BASE_ENV)
    assert config.src == load_env(BASE_ENV).src
    assert [w for w in warnings if missing in w and "environment" in w] == warnings != []


def test_several_problems_are_reported_together():
    message = config_error(environ=env(ENCRYPTION_TYPE="des", ENCRYPTION_SALT="abc",
                                       LZMA_LEVEL="99", BACKUP_PROCESSES="0",
                                       IGNORE_REGEX="(", SRC_LOCAL_PATH=None))
    for variable in ("ENCRYPTION_TYPE", "ENCRYPTION_SALT", "LZMA_LEVEL", "BACKUP_PROCESSES",
                     "IGNORE_REGEX", "SRC_LOCAL_PATH"):
        assert variable in message
    assert len(message.splitlines()) >= 7            # a heading and one line per problem


def test_nothing_at_all_reports_every_missing_piece():
    message = config_error(None, {})
    for variable in ("SRC_LOCAL_PATH", "DEST_LOCAL_PATH", "ENCRYPTION_PASSWORD"):
        assert variable in message


# ----------------------------------------------------------------------------------------
# Secrets
# ----------------------------------------------------------------------------------------

def s3_env(section, secret):
    prefix = section.upper() + "_"
    return {prefix + "S3_BUCKET": section + "-bucket", prefix + "AWS_ACCESS_KEY_ID": "AKIA",
            prefix + "AWS_SECRET_ACCESS_KEY": secret}


def test_repr_never_shows_the_password_or_secret_keys():
    environ = {"ENCRYPTION_PASSWORD": PASSWORD, "ENCRYPTION_SALT": SALT}
    for n, section in enumerate(esb.STORAGE_SECTIONS):
        environ.update(s3_env(section, f"{S3_SECRET}{n}"))
    config = load_env(environ)
    texts = [repr(config), str(config), repr(config.codec), str(config.codec)]
    texts += [repr(getattr(config, s)) for s in esb.STORAGE_SECTIONS]
    for text in texts:
        assert PASSWORD not in text
        assert S3_SECRET not in text
    assert "encryption_type='aes'" in repr(config.codec)    # still useful for debugging


@pytest.mark.parametrize("changes", [
    {"ENCRYPTION_TYPE": "rot13"},
    {"ENCRYPTION_SALT": "not-hex"},
    {"ENCRYPTION_PASSWORD": PASSWORD + "\u20ac"},                    # the password is the problem
    {"DEST_AWS_ACCESS_KEY_ID": None},                               # secret without its key id
    {"DEST_LOCAL_PATH": "/also"},                                   # both kinds of storage
    {"BACKUP_PROCESSES": "x", "COMPRESS": "perhaps", "IGNORE_REGEX": "(("},
    {"HEALTHCHECK_URL": f"htps://hc.example/{S3_SECRET}",                 # URLs hold keys
     "NOTIFY_URL": f"https://ntfy.example/{S3_SECRET} topic"},
])
def test_config_errors_never_show_the_password_or_secret_key(changes):
    with_secret = env(DEST_LOCAL_PATH=None, **s3_env("dest", S3_SECRET))
    message = config_error(environ=env(with_secret, **changes))
    assert PASSWORD not in message
    assert S3_SECRET not in message


def test_secret_under_an_unknown_storage_key_is_not_echoed(tmp_path):
    path = write_config(tmp_path, {"src": {"local_path": "/a"},
                                   "dest": {"s3_bucket": "b", "aws_secret_key": S3_SECRET},
                                   "encryption_password": PASSWORD})
    message = config_error(path)
    assert "aws_secret_key" in message and S3_SECRET not in message


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o666])
@pytest.mark.parametrize("secret", ["password", "aws_secret_access_key"])
def test_config_file_with_secrets_readable_by_others_warns(tmp_path, mode, secret):
    data = {"src": {"local_path": "/a"}, "dest": {"local_path": "/b"}, "encrypt": False}
    if secret == "password":
        data.update(encrypt=True, encryption_password=PASSWORD)
    else:
        data["dest"] = {"s3_bucket": "b", "aws_access_key_id": "AKIA",
                        "aws_secret_access_key": S3_SECRET}
    path = write_config(tmp_path, data, mode=mode)
    _, warnings = esb.load_config(path, {})
    assert any("chmod 600" in w and path in w for w in warnings), warnings
    assert not any(PASSWORD in w or S3_SECRET in w for w in warnings)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_config_file_does_not_warn(tmp_path, mode):
    path = write_config(tmp_path, FULL, mode=mode)
    assert esb.load_config(path, {})[1] == []


def test_unknown_top_level_key_is_an_error_with_the_key_it_looks_like(tmp_path):
    """A typo must not leave its setting at the default: "version_keep_days" turned history
    off, and the run then removed every kept version."""
    path = write_config(tmp_path, {"src": {"local_path": "/a"}, "dest": {"local_path": "/b"},
                                   "encryption_password": PASSWORD, "comment": "nightly",
                                   "version_keep_days": 30})
    lines = config_error(path).splitlines()[1:]
    assert len(lines) == 2
    typo = next(line for line in lines if "'version_keep_days'" in line)
    assert path in typo and "did you mean 'versions_keep_days'" in typo
    assert "VERSIONS_KEEP_DAYS" in typo and "rename" in typo
    other = next(line for line in lines if "'comment'" in line)
    assert "did you mean" not in other and "remove it" in other


def test_unknown_storage_key_close_to_one_names_it(tmp_path):
    path = write_config(tmp_path, {"src": {"local_path": "/a"}, "encryption_password": PASSWORD,
                                   "dest": {"s3_bucket": "b", "regoin_name": "eu"}})
    message = config_error(path)
    assert "dest.regoin_name" in message and "did you mean 'region_name'" in message


def test_every_key_the_existing_tool_reads_is_accepted(tmp_path):
    """Its code reads these top-level keys (CONFIG_ALL, and config.get('encryption_key'),
    which it set itself); a config of its users holds no others."""
    old_keys = {"encryption_password": PASSWORD, "encryption_salt": SALT,
                "encrypt_filenames": False, "backup_processes": 4, "restore_processes": 4,
                "deleted_keep_days": None, "ignore_regex": [], "lzma_level": 6,
                "gzip_level": 6, "compress": True, "encrypt": True, "encryption_type": "aes",
                "encryption_key": None}
    path = write_config(tmp_path, {"src": {"local_path": "/a"}, "dest": {"local_path": "/b"},
                                   "restore": {"local_path": "/r"}, **old_keys})
    assert esb.load_config(path, {})[1] == []


@pytest.mark.parametrize("variable,expected", [
    ("VERSION_KEEP_DAYS", "did you mean VERSIONS_KEEP_DAYS?"),
    ("ENCRYPTION_PASWORD", "did you mean ENCRYPTION_PASSWORD?"),
    ("DEST_BUCKET", "did you mean DEST_S3_BUCKET?"),
    ("SRC_LOCALPATH", "did you mean SRC_LOCAL_PATH?"),
    ("RESTORE_FOLDER", "a storage's variables end in LOCAL_PATH"),
    ("versions_keep_days", "names are upper case; rename it to VERSIONS_KEEP_DAYS"),
])
def test_environment_variable_meant_for_us_but_unknown_is_an_error(variable, expected):
    message = config_error(environ=env(**{variable: "30"}))
    lines = message.splitlines()[1:]
    assert len(lines) == 1 and variable in lines[0] and expected in lines[0]
    assert "rename" in lines[0]


# What a machine, a container image, Docker, Kubernetes, ECS or CI put in an environment:
# none of it is ours, and none may stop a run.
TYPICAL_VARIABLES = (
    "PATH HOME HOSTNAME LANG LANGUAGE LC_ALL PWD OLDPWD TERM SHELL SHLVL USER LOGNAME MAIL _ "
    "TMPDIR TZ CRONTAB DEBIAN_FRONTEND container PYTHONUNBUFFERED PYTHONDONTWRITEBYTECODE "
    "PYTHON_VERSION PYTHON_SHA256 PYTHON_PIP_VERSION PYTHON_GET_PIP_URL GPG_KEY PYTHONPATH "
    "VIRTUAL_ENV PIP_NO_CACHE_DIR BASH_ENV ENV COLUMNS LINES EDITOR PAGER DISPLAY "
    "XDG_RUNTIME_DIR XDG_CONFIG_HOME SSH_AUTH_SOCK SSH_CONNECTION SSH_CLIENT SSH_TTY "
    "HTTP_PROXY HTTPS_PROXY NO_PROXY http_proxy https_proxy no_proxy REQUESTS_CA_BUNDLE "
    "SSL_CERT_FILE SSL_CERT_DIR CURL_CA_BUNDLE AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY "
    "AWS_SESSION_TOKEN AWS_DEFAULT_REGION AWS_REGION AWS_PROFILE AWS_CONFIG_FILE "
    "AWS_SHARED_CREDENTIALS_FILE AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE AWS_CA_BUNDLE "
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI AWS_EXECUTION_ENV ECS_CONTAINER_METADATA_URI "
    "ECS_CONTAINER_METADATA_URI_V4 KUBERNETES_SERVICE_HOST KUBERNETES_SERVICE_PORT "
    "KUBERNETES_SERVICE_PORT_HTTPS KUBERNETES_PORT KUBERNETES_PORT_443_TCP "
    "KUBERNETES_PORT_443_TCP_PROTO KUBERNETES_PORT_443_TCP_PORT KUBERNETES_PORT_443_TCP_ADDR "
    "DEST_SERVICE_HOST DEST_SERVICE_PORT DEST_PORT DEST_PORT_9000_TCP_ADDR "
    "RESTORE_API_SERVICE_HOST RESTORE_API_PORT_8080_TCP SRC_DB_SERVICE_PORT_POSTGRES "
    "ESB_ENV_FILE ESB_LOCK_FILE ESB_SCRIPT ESB_PYTHON ESB_CRON ESB_LOG_OUT ESB_LOG_ERR "
    "ESB_LOCALTIME BACKUP_EXIT_CODE ENCRYPTION_KEY MINIO_ROOT_USER MINIO_ROOT_PASSWORD "
    "POSTGRES_PASSWORD PGPASSWORD MYSQL_PASSWORD DATABASE_URL REDIS_URL SECRET_KEY "
    "LOG_LEVEL DEBUG CI GITHUB_ACTIONS GITHUB_WORKSPACE RUNNER_TEMP PYTEST_XDIST_WORKER "
    "PYTEST_CURRENT_TEST COVERAGE_PROCESS_START NODE_EXTRA_CA_CERTS PIP_CERT HOSTTYPE "
    "S6_KEEP_ENV PUID PGID UMASK NVIDIA_VISIBLE_DEVICES tz crontab").split()


def test_no_ordinary_environment_variable_is_taken_for_a_mistake():
    """The check runs over this machine's real environment (a run reads it whole) plus what
    containers typically hold: nothing there is an error or a warning."""
    environ = {**os.environ, **dict.fromkeys(TYPICAL_VARIABLES, "x"), **BASE_ENV}
    assert esb.unknown_variables(environ) == []
    config, warnings = esb.load_config(None, environ)
    assert config.src.local_path == "/srv/data" and warnings == []


# ----------------------------------------------------------------------------------------
# read_raw_config: the merged view before validation
# ----------------------------------------------------------------------------------------

def test_raw_config_with_nothing_has_empty_storages():
    raw, warnings = esb.read_raw_config(None, {})
    assert raw == {"src": None, "dest": None, "restore": None}
    assert warnings == []


def test_raw_config_merges_file_and_environment_key_by_key(tmp_path):
    path = write_config(tmp_path, {"dest": {"s3_bucket": "file", "region_name": "eu"},
                                   "lzma_level": 9, "encryption_type": "aes"})
    raw, _ = esb.read_raw_config(path, {"DEST_S3_BUCKET": "env", "ENCRYPTION_TYPE": "cha",
                                        "RESTORE_LOCAL_PATH": "/r", "UNRELATED": "x"})
    assert raw["dest"] == {"s3_bucket": "env", "region_name": "eu"}
    assert raw["restore"] == {"local_path": "/r"}
    assert raw["src"] is None
    assert raw["lzma_level"] == 9                          # file values keep their JSON type
    assert raw["encryption_type"] == "cha"
    assert "UNRELATED" not in raw and "unrelated" not in raw


def test_raw_config_keeps_environment_values_as_text():
    raw, _ = esb.read_raw_config(None, {"BACKUP_PROCESSES": "3", "COMPRESS": "no",
                                        "IGNORE_REGEX": "^x"})
    assert raw["backup_processes"] == "3"
    assert raw["compress"] == "no"
    assert raw["ignore_regex"] == "^x"


# ----------------------------------------------------------------------------------------
# One table: SETTINGS
# ----------------------------------------------------------------------------------------

def test_config_fields_and_the_table_agree():
    """Every setting lands on Config (its field, a part's field, or extra) and every field
    of Config that is a setting takes its default from the setting's row."""
    rows = {row.key: row for row in esb.SETTINGS}
    assert len(rows) == len(esb.SETTINGS)
    parts = {"codec": {f.name for f in esb.dataclasses.fields(esb.Codec)},
             "alerts": {f.name for f in esb.dataclasses.fields(esb.Alerts)}}
    fields = {f.name: f for f in esb.dataclasses.fields(esb.Config)}
    for row in esb.SETTINGS:
        if row.into.startswith("object_lock."):
            assert row.into.split(".")[1] in esb.ObjectLock._fields
        elif row.into:
            part, name = row.into.split(".")
            assert name in parts[part], row.key
        else:
            assert row.key in fields and fields[row.key].default == row.default, row.key
    not_settings = {"src", "dest", "restore", "codec", "alerts", "throttle", "object_lock",
                    "extra"}
    assert set(fields) - not_settings <= set(rows)
    assert set(esb._PARTS) == {"codec", "alerts", "object_lock"}
    assert esb.Alerts().notify_on == rows["notify_on"].default
    with pytest.raises(ValueError):         # a row's type is one _Checker reads
        esb.Setting("upload_retries", "integer", 3, "tries of each upload")


def test_a_new_setting_is_one_row(monkeypatch):
    """A row added to SETTINGS is read from the environment (and a flag), checked,
    reachable on the loaded config, and the documentation check names it until README
    does."""
    from test_readme import README, undocumented

    row = esb.Setting("upload_retries", "int", 3, "tries of each upload", low=1, high=10,
                      flag="--upload-retries", metavar="N")
    monkeypatch.setattr(esb, "SETTINGS", (*esb.SETTINGS, row))
    assert load_env(BASE_ENV).extra == {"upload_retries": 3}
    assert load_env(env(UPLOAD_RETRIES="7")).extra["upload_retries"] == 7
    assert "upload_retries (environment UPLOAD_RETRIES): '11' is not a whole number from 1 " \
           "to 10" in config_error(environ=env(UPLOAD_RETRIES="11"))
    assert "did you mean UPLOAD_RETRIES?" in config_error(environ=env(UPLOAD_RETIRES="2"))
    options = esb.parse_args(["--upload-retries", "5"])
    assert options.settings == {"upload_retries": 5}
    config, _ = esb.load_config(None, env(UPLOAD_RETRIES="7"), flags=options.settings)
    assert config.extra["upload_retries"] == 5
    with pytest.raises(SystemExit):
        esb.parse_args(["--upload-retries", "0"])
    assert undocumented(README) == ["UPLOAD_RETRIES", "--upload-retries"]
    documented = README.replace("`ENCRYPTION_PASSWORD`", "`ENCRYPTION_PASSWORD`, "
                                "`UPLOAD_RETRIES`") + "\n--upload-retries\n"
    assert undocumented(documented) == []


def test_a_settings_validator_sees_the_values_read_before_it(monkeypatch):
    def even(value, values, check):
        if value % 2:
            check.problem("batch_pairs", f"{value} is odd (backup_processes is "
                          f"{values['backup_processes']})")
        return value

    row = esb.Setting("batch_pairs", "int", 2, "pairs", validate=even)
    monkeypatch.setattr(esb, "SETTINGS", (*esb.SETTINGS, row))
    assert "batch_pairs (environment BATCH_PAIRS): 3 is odd (backup_processes is 4)" in \
        config_error(environ=env(BATCH_PAIRS="3", BACKUP_PROCESSES="4"))
