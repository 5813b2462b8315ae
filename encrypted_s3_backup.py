#!/usr/bin/env python3
"""encrypted_s3_backup: compressed, encrypted, stateless backups to S3 or a local folder.

Pipeline
    walk the source -> for each new or changed file: read once (hash, compress, encrypt)
    -> store one object whose *name* carries the file's metadata -> rename objects of
    files that disappeared (deleted date), expire old ones.  Restore and verify run the
    same steps backwards: authenticate and decrypt, decompress, check size and MD5.

On-disk format (frozen: it is the existing masterapps-au tool's format; no version byte;
docs/FORMAT.md is the reference, with its known answers)
    object name, plaintext names:
        <path>.<b36 mtime>.<b36 size>.<b36 md5>.<b36 deleted YYYYMMDD or 0>.enc
        b36 of a number: lowercase base 36, no leading zeros ("0" for 0); md5 is the digest
        read as one big-endian number; mtime is whole seconds (truncated); deleted is the
        local date a run first saw the file missing.  Parse by splitting four fields off
        the right at dots: what is left is the path ("/"-separated, may hold dots).
    object name, encrypted names:
        b36bytes(encrypt(utf8(<plaintext name without .enc>))) + ".enc"
        b36bytes: one "0" per leading zero byte, then the base-36 digits of the rest read
        as one big-endian number; encrypt: as object bytes below, uncompressed, a fresh
        nonce each time.  A name that does not decrypt is read as a plaintext name.
    object bytes:
        +-----------+-------------------------+-----------+-----------------------+
        | salt (16) | nonce (16 aes / 24 cha) | tag (16)  | ciphertext of payload |
        +-----------+-------------------------+-----------+-----------------------+
        payload = xz (original size <= 10 MiB) or gzip (above) of the file, or the
        file itself when compress is off; without encryption the object is the payload.
        A reader picks the decompressor by the magic (1f 8b: gzip, else xz/lzma), so data
        that does not compress may be one gzip member of stored blocks at any size.
    keys:
        aes: AES-256-GCM (16-byte nonce), key PBKDF2-HMAC-SHA512(latin1(password), salt,
        100,000 rounds); cha: XChaCha20-Poly1305 (IETF), key Argon2id v0x13 (utf8(password),
        salt, t=3, m=64 MiB, p=4).  Every object carries its salt; a configured salt is
        only a cache for its key.
    history (ours only, with versions_keep_days): a version object is a replaced object
        renamed with its deleted field set to a stamp, <epoch second the replacing run
        started> * 100000 + <days it is kept>, and the suffix ".ver" instead of ".enc"
        (encrypted names: the same encrypted stem + ".ver").  A stamp is >= 10**8; a
        smaller deleted field of a ".ver" is the YYYYMMDD it was replaced on (release 1.0.0
        wrote those).  The existing tool reads only ".enc" objects, so it never sees them; a
        path keeps at most one ".enc" object after a completed run.
    deletion marks (ours only): an object in an archive storage class cannot be renamed, so
        when its file is deleted it keeps its live name and an empty object is written
        beside it, named as the rename would have (deleted field: the date) with the suffix
        ".del" (encrypted names: encrypted stem + ".del").  A mark whose fields but the date
        are a live ".enc" object's makes us read that object as deleted on that date.

There is no state anywhere else: the destination's listing is the whole truth.

Sections, in this order (a section's code uses only names defined in it or above it;
inside a section a function may call one defined further down, at run time).  The big
ones have sub-banners (# ----), named in parentheses:
    Constants, Errors, Base36 codec, Key derivation and streaming AEAD, Backup names,
    Compression, Content pipeline, Bandwidth cap, Storages (the contract, local, S3
    requests, S3 wire, S3 storage), Configuration (the settings, one row each), Jobs,
    Planner, Listings, Stopping, Workers, Reporting, Monitoring, Driver (pools, request
    scheduler, listing helpers, archive thaws, commands), Command line.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import functools
import gc
import collections
import hashlib
import heapq
import io
import itertools
import json
import logging
import lzma
import math
import multiprocessing
import os
import queue
import re
import signal
import stat
import struct
import sys
import tempfile
import threading
import time
import traceback
import zlib
import dataclasses
from array import array
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import (Any, BinaryIO, Callable, ClassVar, ContextManager, Iterable, Iterator,
                    NamedTuple, NoReturn, Optional, Protocol, TypeVar, Union, cast)

__version__ = "1.0.0"
log = logging.getLogger("encrypted_s3_backup")   # every section logs; Reporting sets it up

# =====================================================================================
# Constants
# =====================================================================================

OBJECT_SUFFIX = ".enc"            # every backup object's name ends with this, but ...
VERSION_SUFFIX = ".ver"           # ... a version object's (history), and ...
MARK_SUFFIX = ".del"              # ... a deletion mark's (archive classes): the existing tool reads
                                  # only ".enc" objects, so it never sees them
NAME_SUFFIXES = (OBJECT_SUFFIX, VERSION_SUFFIX, MARK_SUFFIX)   # (all of one length)
B36_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
B36_FIELD_MAX = 64                # chars; longest numeric name field we accept (md5 is <= 25)
MD5_LEN = 16                      # bytes of an MD5 digest
STAMP_DAYS = 100_000              # a version's stamp is <replaced epoch second> * this + <days
                                  # kept>, so versions_keep_days is below it
STAMP_MIN = 10 ** 8               # stamps are this or more; a YYYYMMDD (versions before stamps,
                                  # and every deleted date) is less

SALT_LEN = 16                     # bytes; fixed by the format, also for a configured salt
TAG_LEN = 16                      # bytes; GCM and Poly1305 tags
NONCE_LEN = {"aes": 16, "cha": 24}  # bytes; aes uses a 16-byte GCM nonce (GHASH-derived J0)
ENCRYPTION_TYPES = tuple(NONCE_LEN)
PBKDF2_ROUNDS = 100_000           # PBKDF2-HMAC-SHA512 iterations (aes)
ARGON2_TIME, ARGON2_MEMORY_KIB, ARGON2_LANES = 3, 65_536, 4  # Argon2id v0x13 (cha)
KEY_LEN = 32                      # bytes; AES-256 and ChaCha20 keys

XZ_MAX_SIZE = 10 * 1024 * 1024    # bytes; files up to and including this size get xz, above gzip
DEFAULT_LEVEL = 6                 # lzma_level and gzip_level when unset or 0
LZMA2_MIN_DICT = 4096             # bytes; liblzma's smallest dictionary
LZMA2_PRESET_DICT = {0: 1 << 18, 1: 1 << 20, 2: 1 << 21, 3: 1 << 22, 4: 1 << 22,
                     5: 1 << 23, 6: 1 << 23, 7: 1 << 24, 8: 1 << 25, 9: 1 << 26}
GZIP_MAGIC = b"\x1f\x8b"          # a payload starting with this is gzip, anything else xz/lzma
SAMPLE_LEN = 64 * 1024            # bytes of a file's first chunk tried for compressibility
SAMPLE_MIN_FILE = 128 * 1024      # bytes; smaller files are always compressed normally
INCOMPRESSIBLE_RATIO = 0.97       # sample deflates to >= 97 %: store it (stored gzip blocks)

CHUNK = 1024 * 1024               # bytes read, compressed and encrypted at a time
SPILL_BYTES = 8 * 1024 * 1024     # bytes of work kept in memory before spilling to a temp file
                                  # (at most 100 MB by design; less keeps workers small)

# Exit codes (documented in --help and the README)
EXIT_OK = 0            # everything was done
EXIT_FAILED = 1        # some files failed (each named on stderr); all others were done
EXIT_USAGE = 2         # usage, configuration or storage error, or a refused run: nothing done
EXIT_BUG = 3           # internal error: a traceback to report
EXIT_THAWING = 4       # restore or verify did everything readable; the rest is in an archive
                       # storage class, asked to thaw (or left, --no-thaw): run again later
EXIT_ATTENTION = 5     # a backup did everything, but needs attention: more than half of the
                       # files changed (kept as history): ransomware, or a wanted change?
EXIT_UNPROTECTED = 6    # --check-protection: keys that can write to the destination could
                        # also destroy what it holds (or that could not be ruled out)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM


# =====================================================================================
# Errors
# =====================================================================================

class BackupError(Exception):
    """Base of every error the user can act on; ``main()`` prints it as one line.

    Raised for one file, it fails that file only (the run goes on and exits EXIT_FAILED);
    raised before the work starts, its exit_code is the run's.
    """

    exit_code = EXIT_FAILED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ConfigError(BackupError):
    """The configuration or the command line is wrong; nothing was done."""

    exit_code = EXIT_USAGE


class BadNameError(BackupError):
    """An object name is neither a valid plaintext nor a decryptable encrypted name."""


class IntegrityError(BackupError):
    """An object failed authentication, decompression, or its size or MD5 check."""


class SourceChangedError(BackupError):
    """A source file changed while it was being read."""


class UnsafePathError(BackupError):
    """A backup name's path would leave the restore root (``..``, absolute, control chars)."""


class UnusableNameError(BackupError):
    """A file's name cannot be a key of the storage (an S3 key must be UTF-8); that file
    fails, the others go on."""


class StorageError(BackupError):
    """A storage cannot be reached or refused an operation; the run cannot start."""

    exit_code = EXIT_USAGE


class MissingError(BackupError):
    """A file or object that was listed is not there any more (every storage maps to this)."""


class TransferError(BackupError):
    """A storage request for one file failed (network, service): every storage turns its
    own transport and service errors into this, so that no caller needs to know them."""


class RefusedError(BackupError):
    """A run that looks like a mistake (mass deletion) was refused; nothing was changed."""

    exit_code = EXIT_USAGE


class PasswordError(BackupError):
    """The configured password (or encryption_type) opens none of the backup's objects it
    was tried on; nothing was done."""

    exit_code = EXIT_USAGE


class NothingSelectedError(BackupError):
    """A restore, verify or list found nothing to do with what it was given (a destination
    without backup objects, a filter that matches nothing); nothing was done."""

    exit_code = EXIT_USAGE


class CommandError(BackupError):
    """The pre_command failed, so the backup did not start; nothing was changed."""

    exit_code = EXIT_USAGE


# What fails one file and lets the run go on: our own errors and the operating system's.
# Anything else raised while doing a file is a bug: it stops the run with its traceback.
FILE_FAILURES = (BackupError, OSError)


class WorkerBug(Exception):
    """A bug (an unexpected exception) in a worker, carrying its traceback as text: the
    parent stops the run and ``main()`` prints it and exits EXIT_BUG."""

    exit_code = EXIT_BUG

    def __init__(self, traceback_text: str):
        super().__init__(traceback_text)
        self.traceback = traceback_text


# =====================================================================================
# Base36 codec (format: see the module docstring)
# =====================================================================================

_B36_RE = re.compile(r"[0-9a-zA-Z]+\Z")


_B36_PAIRS = [high + low for high in B36_DIGITS for low in B36_DIGITS]   # "00" .. "zz"


def b36_encode_int(n: int) -> str:
    """Plain base-36 spelling of a non-negative integer, lowercase, no leading zeros."""
    assert n >= 0, n
    if n < 36:
        return B36_DIGITS[n]
    pairs = []                  # two digits at a time: every name has five of these numbers
    while n:
        n, rem = divmod(n, 1296)
        pairs.append(_B36_PAIRS[rem])
    return "".join(reversed(pairs)).lstrip("0")


def b36_decode_int(text: str) -> int:
    """Inverse of b36_encode_int; tolerates leading zeros and upper case like the existing tool."""
    if not _B36_RE.match(text):
        raise ValueError(f"not a base-36 number: {text!r}")
    return int(text, 36)


def b36_encode_bytes(data: bytes) -> str:
    """Byte-string base36: one "0" per leading zero byte, then the digits of the rest."""
    if not data:
        raise ValueError("cannot base36-encode an empty byte string")
    stripped = data.lstrip(b"\0")
    number = int.from_bytes(stripped, "big")
    return "0" * (len(data) - len(stripped)) + (b36_encode_int(number) if number else "")


def b36_decode_bytes(text: str) -> bytes:
    """Inverse of b36_encode_bytes: leading "0"s come back as leading zero bytes."""
    if not _B36_RE.match(text):
        raise ValueError("not a base-36 byte string")
    rest = text.lstrip("0")
    number = int(rest, 36) if rest else 0
    return bytes(len(text) - len(rest)) + number.to_bytes((number.bit_length() + 7) // 8, "big")


# =====================================================================================
# Key derivation and streaming AEAD (format: see the module docstring)
# =====================================================================================

def _password_bytes(encryption_type: str, password: str) -> bytes:
    """aes (PBKDF2) reads the password as Latin-1, cha (Argon2id) as UTF-8, as the existing tool does."""
    if encryption_type == "cha":
        return password.encode("utf-8", "surrogateescape")
    try:
        return password.encode("latin-1")
    except UnicodeEncodeError:
        raise ConfigError(
            "encryption_password has a character outside Latin-1, which encryption_type 'aes' "
            "cannot use (the format derives aes keys from Latin-1 bytes); choose a Latin-1 "
            "password or use encryption_type 'cha' for new backups") from None


@lru_cache(maxsize=256)
def derive_key(encryption_type: str, password: str, salt: bytes) -> bytes:
    """The 32-byte key for one (cipher, password, salt); cached, so derived once per process."""
    secret = _password_bytes(encryption_type, password)
    if encryption_type == "aes":
        return hashlib.pbkdf2_hmac("sha512", secret, salt, PBKDF2_ROUNDS, KEY_LEN)
    from argon2.low_level import Type, hash_secret_raw
    return hash_secret_raw(secret, salt, time_cost=ARGON2_TIME, memory_cost=ARGON2_MEMORY_KIB,
                           parallelism=ARGON2_LANES, hash_len=KEY_LEN, type=Type.ID, version=19)


_DERIVING: list[threading.Thread] = []      # derive_ahead's threads, until key_derived()


def derive_ahead(encryption_type: str, password: str, salt: bytes) -> None:
    """Start deriving a key on a thread of this process, which lists meanwhile (the key
    functions release the GIL): forked workers then find it in derive_key's cache instead
    of each deriving it on its first object (PBKDF2's 100,000 rounds: 60-90 ms a process,
    every run).  key_derived() waits for it; worker_pool calls that before it forks, since
    a fork must not copy a thread that is inside OpenSSL.  A failure (a password that
    cannot be encoded) is left for the first real use of the key to report."""
    def derive() -> None:
        with contextlib.suppress(Exception):
            derive_key(encryption_type, password, salt)
    if any(thread.is_alive() for thread in _DERIVING):
        return                          # (planning again after OutOfOrder)
    thread = threading.Thread(target=derive, name="derive key", daemon=True)
    thread.start()
    _DERIVING.append(thread)


def key_derived() -> None:
    """Wait for every key derive_ahead started."""
    while _DERIVING:
        _DERIVING.pop().join()


_CHACHA_CONSTANTS = (0x61707865, 0x3320646E, 0x79622D32, 0x6B206574)  # "expand 32-byte k"


def _chacha20(key: bytes, counter: int, nonce12: bytes):
    """A cryptography ChaCha20 stream starting at block ``counter`` (RFC 8439 layout)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
    return Cipher(algorithms.ChaCha20(key, struct.pack("<I", counter) + nonce12), None).encryptor()


def hchacha20(key: bytes, nonce16: bytes) -> bytes:
    """HChaCha20 subkey (draft-irtf-cfrg-xchacha 2.2).

    A ChaCha20 block is rounds(state) + state; HChaCha20 is words 0-3 and 12-15 of
    rounds(state).  So take the keystream block whose state has ``nonce16`` as its last four
    words and subtract the known input words again.
    """
    counter, nonce12 = struct.unpack("<I", nonce16[:4])[0], nonce16[4:]
    words = struct.unpack("<16I", _chacha20(key, counter, nonce12).update(bytes(64)))
    inputs = _CHACHA_CONSTANTS + struct.unpack("<4I", nonce16)
    positions = (0, 1, 2, 3, 12, 13, 14, 15)
    return struct.pack("<8I", *((words[p] - i) & 0xFFFFFFFF for p, i in zip(positions, inputs)))


class _XChaChaSealer:
    """Streaming XChaCha20-Poly1305 (IETF), no associated data by default."""

    def __init__(self, key: bytes, nonce: bytes, decrypt_tag: Optional[bytes] = None,
                 aad: bytes = b""):
        from cryptography.hazmat.primitives.poly1305 import Poly1305
        subkey = hchacha20(key, nonce[:16])
        nonce12 = bytes(4) + nonce[16:]
        self._stream = _chacha20(subkey, 1, nonce12)
        self._mac = Poly1305(_chacha20(subkey, 0, nonce12).update(bytes(32)))
        self._mac.update(aad + bytes(-len(aad) % 16))
        self._aad_len, self._ct_len = len(aad), 0
        self._decrypt_tag = decrypt_tag

    def update(self, data: bytes) -> bytes:
        if self._decrypt_tag is None:
            out = self._stream.update(data)
            self._mac.update(out)
        else:
            self._mac.update(data)
            out = self._stream.update(data)
        self._ct_len += len(data)
        return out

    def finalize(self) -> bytes:
        self._mac.update(bytes(-self._ct_len % 16) + struct.pack("<QQ", self._aad_len, self._ct_len))
        if self._decrypt_tag is None:
            return self._mac.finalize()
        from cryptography.exceptions import InvalidSignature
        try:
            self._mac.verify(self._decrypt_tag)
        except InvalidSignature:
            raise IntegrityError("authentication failed (wrong password or damaged object)") from None
        return self._decrypt_tag


@lru_cache(maxsize=256)
def _aes(key: bytes):
    """cryptography's AES algorithm object for a key (checked once, like derive_key's)."""
    from cryptography.hazmat.primitives.ciphers import algorithms
    return algorithms.AES(key)


class _AesGcmSealer:
    """Streaming AES-256-GCM with the format's 16-byte nonce."""

    def __init__(self, key: bytes, nonce: bytes, decrypt_tag: Optional[bytes] = None):
        from cryptography.hazmat.primitives.ciphers import Cipher, modes
        cipher = Cipher(_aes(key), modes.GCM(nonce, decrypt_tag))
        self._encryptor = cipher.encryptor() if decrypt_tag is None else None
        self._ctx = self._encryptor or cipher.decryptor()
        self._tag = decrypt_tag

    def update(self, data: bytes) -> bytes:
        return self._ctx.update(data)

    def finalize(self) -> bytes:
        from cryptography.exceptions import InvalidTag
        try:
            self._ctx.finalize()
        except InvalidTag:
            raise IntegrityError("authentication failed (wrong password or damaged object)") from None
        if self._tag is not None:
            return self._tag
        assert self._encryptor is not None       # (no tag given: made to encrypt)
        return self._encryptor.tag


def aead_stream(encryption_type: str, key: bytes, nonce: bytes, tag: Optional[bytes] = None):
    """A streaming AEAD context: ``update(bytes) -> bytes`` and ``finalize() -> tag``.

    With ``tag`` it decrypts, and ``finalize()`` raises IntegrityError unless the tag
    matches.  Output of ``update()`` while decrypting is *unauthenticated* until then.
    """
    assert len(key) == KEY_LEN and len(nonce) == NONCE_LEN[encryption_type]
    if encryption_type == "aes":
        return _AesGcmSealer(key, nonce, tag)
    return _XChaChaSealer(key, nonce, tag)


def seal_bytes(encryption_type: str, key: bytes, salt: bytes, data: bytes,
               nonce: Optional[bytes] = None) -> bytes:
    """One-shot encryption into the object layout ``salt || nonce || tag || ciphertext``."""
    nonce = os.urandom(NONCE_LEN[encryption_type]) if nonce is None else nonce
    if encryption_type == "aes":
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        sealed = AESGCM(key).encrypt(nonce, data, None)
    else:
        from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt
        sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(data, None, nonce, key)
    return salt + nonce + sealed[-TAG_LEN:] + sealed[:-TAG_LEN]


@lru_cache(maxsize=256)
def _aesgcm(key: bytes):
    """cryptography's one-shot AES-GCM for a key (made once per key, like _aes)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    return AESGCM(key)


def unseal_bytes(encryption_type: str, key: bytes, nonce: bytes, tag: bytes,
                 sealed: bytes) -> bytes:
    """One-shot decryption of a whole ciphertext (the inverse of seal_bytes past the
    header): authenticated before a byte comes out; IntegrityError when it fails."""
    if encryption_type == "aes":
        from cryptography.exceptions import InvalidTag
        try:
            return _aesgcm(key).decrypt(nonce, sealed + tag, None)
        except InvalidTag:
            pass
    else:
        from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt
        from nacl.exceptions import CryptoError
        try:
            return crypto_aead_xchacha20poly1305_ietf_decrypt(sealed + tag, None, nonce, key)
        except CryptoError:
            pass
    raise IntegrityError("authentication failed (wrong password or damaged object)")


def split_header(encryption_type: str, header: bytes) -> tuple[bytes, bytes, bytes]:
    """(salt, nonce, tag) of an object header; IntegrityError when it is too short."""
    nonce_len = NONCE_LEN[encryption_type]
    if len(header) < SALT_LEN + nonce_len + TAG_LEN:
        raise IntegrityError(f"object is {len(header)} bytes, shorter than the "
                             f"{SALT_LEN + nonce_len + TAG_LEN}-byte {encryption_type} header")
    return (header[:SALT_LEN], header[SALT_LEN:SALT_LEN + nonce_len],
            header[SALT_LEN + nonce_len:SALT_LEN + nonce_len + TAG_LEN])


def header_len(encryption_type: str) -> int:
    return SALT_LEN + NONCE_LEN[encryption_type] + TAG_LEN


@dataclass(frozen=True)
class Codec:
    """How object contents and names are written and read: the format switches of the config."""

    compress: bool = True
    encrypt: bool = True
    encryption_type: str = "aes"
    password: str = field(default="", repr=False)
    salt: Optional[bytes] = None          # a configured salt: every object gets it
    encrypt_filenames: bool = False
    lzma_level: int = DEFAULT_LEVEL
    gzip_level: int = DEFAULT_LEVEL

    def key(self, salt: bytes) -> bytes:
        """Key for an object's own salt (the configured salt's key is cached like any other)."""
        return derive_key(self.encryption_type, self.password, salt)

    def new_salt(self) -> bytes:
        return self.salt if self.salt is not None else os.urandom(SALT_LEN)

    def key_ahead(self) -> None:
        """The configured salt's key, derived on a thread while this process lists (see
        derive_ahead).  Not with encrypted names: their listing needs the key at once."""
        if self.encrypt and self.salt is not None and not self.encrypt_filenames:
            derive_ahead(self.encryption_type, self.password, self.salt)


def seal_with(codec: Codec, data: bytes) -> bytes:
    salt = codec.new_salt()
    return seal_bytes(codec.encryption_type, codec.key(salt), salt, data)


def open_with(codec: Codec, blob: bytes) -> bytes:
    """Decrypt a whole small object (an encrypted name); IntegrityError when it fails."""
    salt, nonce, tag = split_header(codec.encryption_type, blob)
    return unseal_bytes(codec.encryption_type, codec.key(salt), nonce, tag,
                        blob[header_len(codec.encryption_type):])


# =====================================================================================
# Backup names (format: see the module docstring)
# =====================================================================================

class BackupName(NamedTuple):
    """Everything we know about a backed-up file: it lives in its object's name.

    (A NamedTuple, like Entry and Stored: a million of them must fit in a few hundred MB.)
    """

    path: str                 # relative, "/"-separated
    mtime: int                # whole seconds since the epoch
    size: int                 # bytes of the original file
    md5: bytes                # 16-byte digest of the original content
    deleted: int = 0          # YYYYMMDD of the run that first saw it missing, 0 while it exists
                              # (of a version: its stamp, see version_stamp, or the YYYYMMDD
                              # it was replaced on when an earlier release wrote it)
    version: bool = False     # a version object (".ver"): a content the file had before
    mark: bool = False        # a deletion mark (".del"): the object of this name, less the
                              # deleted field, is deleted (see apply_marks)

    def with_deleted(self, deleted: int) -> "BackupName":
        return self._replace(deleted=deleted)

    def as_version(self, replaced: int) -> "BackupName":
        """The name this content keeps as a version whose deleted field is ``replaced``: a
        stamp (version_stamp), or the YYYYMMDD of a deleted object it was."""
        return self._replace(deleted=replaced, version=True)


def version_stamp(moment: int, keep_days: int) -> int:
    """A version's deleted field: the epoch second it was replaced, and the days it is kept
    (versions_keep_days then), as ``moment * STAMP_DAYS + keep_days``.  Always at least
    STAMP_MIN, so it cannot be taken for the YYYYMMDD that versions had before stamps."""
    assert 0 < keep_days < STAMP_DAYS and moment * STAMP_DAYS >= STAMP_MIN, (moment, keep_days)
    return moment * STAMP_DAYS + keep_days


def read_stamp(deleted: int) -> Optional[tuple[int, int]]:
    """(moment replaced, days kept) of a version's deleted field; None when it is a
    YYYYMMDD (a version from before stamps: replaced that day, days kept not known)."""
    if deleted < STAMP_MIN:
        return None
    moment, keep_days = divmod(deleted, STAMP_DAYS)
    return moment, keep_days


def name_suffix(name: BackupName) -> str:
    return VERSION_SUFFIX if name.version else MARK_SUFFIX if name.mark else OBJECT_SUFFIX


def format_plain_name(name: BackupName) -> str:
    """``<path>.<mtime>.<size>.<md5>.<deleted>`` without the suffix (".enc" or ".ver")."""
    fields = (name.mtime, name.size, int.from_bytes(name.md5, "big"), name.deleted)
    return name.path + "".join("." + b36_encode_int(n) for n in fields)


def parse_plain_name(stem: str) -> BackupName:
    """Inverse of format_plain_name: four base-36 fields split off the right at dots.

    Raises BadNameError whose message is the reason only; decode_name() adds the name.
    """
    parts = stem.rsplit(".", 4)
    if len(parts) != 5 or not parts[0]:
        raise BadNameError("expected <path>.<mtime>.<size>.<md5>.<deleted>.enc")
    path, mtime, size, md5, deleted = parts
    digits = mtime + size + md5 + deleted       # (one check for all four: a million names)
    if not (mtime and size and md5 and deleted and digits.isascii() and digits.isalnum()
            and max(len(mtime), len(size), len(md5), len(deleted)) <= B36_FIELD_MAX):
        raise BadNameError("a numeric field is not a short base-36 number")
    digest = int(md5, 36)
    if digest >> (8 * MD5_LEN):
        raise BadNameError("the MD5 field is larger than 128 bits")
    return BackupName(path, int(mtime, 36), int(size, 36), digest.to_bytes(MD5_LEN, "big"),
                      int(deleted, 36))


def plain_key_path(key: str) -> Optional[str]:
    """The path a key names if it is read as a plaintext name (four fields and a suffix of
    NAME_SUFFIXES split off the right at dots), without checking the fields; None when it
    cannot be one (an encrypted name has no dots).  For filtering a listing before parsing."""
    if not key.endswith(NAME_SUFFIXES):
        return None
    fields = key[:-len(OBJECT_SUFFIX)].rsplit(".", 4)
    return fields[0] if len(fields) == 5 else None


def read_stem(stem: str, suffix: str) -> BackupName:
    """A plaintext name without its suffix, read with the suffix (".enc", ".ver" or ".del";
    another is a BadNameError)."""
    if suffix == OBJECT_SUFFIX:
        return parse_plain_name(stem)
    if suffix == VERSION_SUFFIX:
        return parse_plain_name(stem)._replace(version=True)
    if suffix == MARK_SUFFIX:
        return parse_plain_name(stem)._replace(mark=True)
    raise BadNameError(f"does not end with {' or '.join(NAME_SUFFIXES)}")


# The four numeric fields of a canonical plaintext name, each as b36_encode_int writes it
# (B36_DIGITS, no leading zero).
_CANONICAL_FIELDS = re.compile(r"(?:\.(?:" + B36_DIGITS[0] + "|[" + B36_DIGITS[1:] + "]["
                               + B36_DIGITS + r"]*)){4}\Z")


def is_canonical_key(key: str, name: BackupName) -> bool:
    """Whether ``key`` is ``name``'s plaintext form (format_plain_name and the suffix),
    found without formatting the name: the path, then four fields spelled as
    b36_encode_int spells numbers (lowercase, no leading zero) and holding the name's
    values, then the suffix."""
    start, end = len(name.path), len(key) - len(name_suffix(name))
    if not (key.startswith(name.path) and key.endswith(name_suffix(name))
            and _CANONICAL_FIELDS.match(key, start, end)):
        return False
    return [int(f, 36) for f in key[start + 1:end].split(".")] == [
        name.mtime, name.size, int.from_bytes(name.md5, "big"), name.deleted]


def is_plaintext_key(key: str, name: BackupName) -> bool:
    """Whether ``key``, read as a plaintext name, is ``name`` (not an encrypted name)."""
    try:
        return read_stem(key[:-len(OBJECT_SUFFIX)], key[-len(OBJECT_SUFFIX):]) == name
    except BadNameError:
        return False


def encode_name(name: BackupName, codec: Codec) -> str:
    """The object name for ``name``: plaintext, or encrypted with a fresh nonce."""
    stem = format_plain_name(name)
    if codec.encrypt_filenames:
        stem = b36_encode_bytes(seal_with(codec, stem.encode("utf-8", "surrogateescape")))
    return stem + name_suffix(name)


def decode_name(object_name: str, codec: Codec) -> BackupName:
    """Read an object name; an encrypted name that does not decrypt is read as plaintext.

    Raises BadNameError when it is neither (the message names the object, never secrets).
    """
    suffix = object_name[-len(OBJECT_SUFFIX):]
    if suffix not in NAME_SUFFIXES:
        raise BadNameError(f"{object_name!r} does not end with {' or '.join(NAME_SUFFIXES)}")
    stem = object_name[:-len(suffix)]
    if codec.encrypt_filenames and "/" not in stem:
        try:
            stem = open_with(codec, b36_decode_bytes(stem)).decode("utf-8", "surrogateescape")
        except (ValueError, IntegrityError):
            pass
    try:
        return read_stem(stem, suffix)
    except BadNameError as exc:
        hint = (" and does not decrypt with this password and encryption_type"
                if codec.encrypt_filenames else "")
        raise BadNameError(f"object {object_name!r} is not a backup name{hint}: "
                           f"{exc.message}") from None


# =====================================================================================
# Compression (format: see the module docstring)
# =====================================================================================

def choose_compression(size: int, sample: bytes) -> str:
    """"xz" up to 10 MiB, "gzip" above, "stored" (gzip level 0) for data that does not shrink.

    The sample is the file's first chunk: deflating 64 KiB of it at level 1 costs well under
    a millisecond and tells photos, archives and video from text.
    """
    if size >= SAMPLE_MIN_FILE and len(sample) >= SAMPLE_LEN // 2:
        probe = sample[:SAMPLE_LEN]
        if len(zlib.compress(probe, 1)) >= INCOMPRESSIBLE_RATIO * len(probe):
            return "stored"
    return "xz" if size <= XZ_MAX_SIZE else "gzip"


def make_compressor(kind: str, size: int, lzma_level: int, gzip_level: int):
    """An object with ``compress(bytes)`` and ``flush()`` producing the format's payload."""
    if kind == "xz":
        # A dictionary larger than the input buys nothing; fitting it keeps the output the same
        # and makes set-up for small files several times cheaper.
        dict_size = min(LZMA2_PRESET_DICT[lzma_level], max(LZMA2_MIN_DICT, size))
        return lzma.LZMACompressor(lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, filters=[
            {"id": lzma.FILTER_LZMA2, "preset": lzma_level, "dict_size": dict_size}])
    return zlib.compressobj(0 if kind == "stored" else gzip_level, zlib.DEFLATED, 31)


LZMA_MEMLIMIT = 256 * 1024 * 1024  # bytes; a hostile xz header cannot make us allocate more


def new_decompressor(gz: bool) -> Any:
    """A decoder for one gzip member (``gz``: the payload starts with GZIP_MAGIC), else the
    auto-detecting LZMA decoder (xz or legacy .lzma)."""
    if gz:
        return zlib.decompressobj(31)
    return lzma.LZMADecompressor(lzma.FORMAT_AUTO, memlimit=LZMA_MEMLIMIT)


def decompress_stream(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Payload chunks in, original chunks (each <= CHUNK) out; the magic picks the decoder.

    ``1f 8b`` is gzip (several members allowed), anything else goes to the auto-detecting
    LZMA decoder (xz or legacy .lzma), concatenated streams allowed.  Output is produced
    lazily, so a consumer that stops early (a decompression bomb) never inflates the rest.
    Raises IntegrityError on malformed or truncated data.
    """
    pending = b""
    for chunk in chunks:
        pending += chunk
        if len(pending) >= 2:
            break
    gz = pending[:2] == GZIP_MAGIC
    decomp, members_done = new_decompressor(gz), 0

    def feed(data: bytes) -> Iterator[bytes]:
        nonlocal decomp, members_done
        while True:
            if decomp.eof:
                members_done += 1
                data = decomp.unused_data + data
                if not data.strip(b"\0"):
                    return
                decomp = new_decompressor(gz)
            out = decomp.decompress(data, CHUNK)
            data = decomp.unconsumed_tail if gz else b""
            if out:
                yield out
            if decomp.eof:
                continue
            if gz:
                if not data and len(out) < CHUNK:
                    return
            elif decomp.needs_input:
                return

    try:
        yield from feed(pending)
        for chunk in chunks:
            yield from feed(chunk)
        if not decomp.eof:
            raise IntegrityError("compressed data is truncated")
    except (lzma.LZMAError, zlib.error, EOFError) as exc:
        if members_done and not decomp.eof and isinstance(exc, (lzma.LZMAError, zlib.error)):
            return  # trailing bytes after a complete stream that are not a stream: ignored
        raise IntegrityError(f"compressed data is corrupt ({exc})") from None


def decompress_whole(payload: bytes, size: int) -> Optional[bytes]:
    """A small payload decompressed in one call, when it is the plain case: one complete
    gzip member or xz stream and nothing after it, whose output stops one byte past
    ``size`` (below CHUNK, so it is never more than a chunk in memory).  None for
    anything else: decompress_stream then decodes it with its rules and messages."""
    if size >= CHUNK:
        return None
    decomp = new_decompressor(payload[:2] == GZIP_MAGIC)
    try:
        plain = decomp.decompress(payload, size + 1)
    except (lzma.LZMAError, zlib.error, EOFError):
        return None
    return plain if decomp.eof and not decomp.unused_data else None


# =====================================================================================
# Content pipeline: encode (hash, compress, encrypt) and decode (decrypt, decompress, check)
# =====================================================================================

def _chunks(src: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    while True:
        chunk = src.read(size)
        if not chunk:
            return
        yield chunk


def encode(src: BinaryIO, size: int, codec: Codec, sink: BinaryIO) -> tuple[bytes, int]:
    """Read ``src`` once and write its object bytes to the seekable ``sink``.

    ``size`` is the file's size when listed; it picks the compressor.  Returns the MD5
    digest and length of what was actually read, which is what the object holds (the
    caller compares it with the listing to detect a file that changed while read).
    The tag is only known at the end, so its place in the header is filled in last.
    """
    md5, total = hashlib.md5(), 0
    chunk = src.read(CHUNK)
    compressor = None
    if codec.compress:
        kind = choose_compression(size, chunk)
        compressor = make_compressor(kind, size, codec.lzma_level, codec.gzip_level)
    aead = None
    if codec.encrypt:
        salt, nonce = codec.new_salt(), os.urandom(NONCE_LEN[codec.encryption_type])
        aead = aead_stream(codec.encryption_type, codec.key(salt), nonce)
        tag_at = sink.tell() + SALT_LEN + len(nonce)
        sink.write(salt + nonce + bytes(TAG_LEN))

    def emit(data: bytes) -> None:
        if data:
            sink.write(aead.update(data) if aead else data)

    while chunk:
        md5.update(chunk)
        total += len(chunk)
        emit(compressor.compress(chunk) if compressor else chunk)
        chunk = src.read(CHUNK)
    if compressor:
        emit(compressor.flush())
    if aead:
        tag = aead.finalize()
        end = sink.tell()
        sink.seek(tag_at)
        sink.write(tag)
        sink.seek(end)
    return md5.digest(), total


def decode(src: Union[BinaryIO, bytes], size: int, md5: bytes, codec: Codec,
           sink: BinaryIO) -> None:
    """Turn object bytes back into the original file, written to ``sink``.

    ``src`` is a stream, or the whole object when it is small (decode_whole).  Raises
    IntegrityError (after which the caller must discard ``sink``: with encryption,
    bytes reach it before the tag at the end of the stream is checked) when the object is
    short, fails authentication, does not decompress, or does not match ``size``/``md5``.
    Output beyond ``size`` stops the decode at once, so a bomb never fills memory or disk.
    """
    if isinstance(src, bytes):
        decode_whole(src, size, md5, codec, sink)
        return
    aead = None
    if codec.encrypt:
        salt, nonce, tag = split_header(codec.encryption_type, src.read(header_len(codec.encryption_type)))
        aead = aead_stream(codec.encryption_type, codec.key(salt), nonce, tag)
        payload: Iterator[bytes] = (aead.update(chunk) for chunk in _chunks(src))
    else:
        payload = _chunks(src)
    try:
        write_checked(decompress_stream(payload) if codec.compress else payload, size, md5,
                      sink)
        for _ in payload:     # bytes after the compressed stream still count for the tag
            pass
    except IntegrityError:
        if aead is None:
            raise
        for _ in payload:
            pass
        aead.finalize()  # a wrong password shows as corrupt data: report the real cause
        raise
    if aead:
        aead.finalize()


def decode_whole(blob: bytes, size: int, md5: bytes, codec: Codec, sink: BinaryIO) -> None:
    """decode() of a whole small object in memory: decrypted and authenticated in one call
    before anything is decompressed, then decompressed in one call when it is one stream
    (decompress_whole).  A stream of chunks costs more than the ciphers themselves on
    objects of a few KB."""
    payload = blob
    if codec.encrypt:
        etype = codec.encryption_type
        salt, nonce, tag = split_header(etype, blob)
        payload = unseal_bytes(etype, codec.key(salt), nonce, tag, blob[header_len(etype):])
    if not codec.compress:
        write_checked((payload,), size, md5, sink)
        return
    plain = decompress_whole(payload, size)
    write_checked((plain,) if plain is not None else decompress_stream(iter((payload,))),
                  size, md5, sink)


def write_checked(chunks: Iterable[bytes], size: int, md5: bytes, sink: BinaryIO) -> None:
    """Write decoded ``chunks`` to ``sink``; IntegrityError as soon as they pass ``size``
    bytes, or at the end when their length or MD5 is not the name's."""
    digest, total = hashlib.md5(), 0
    for chunk in chunks:
        total += len(chunk)
        if total > size:
            raise IntegrityError(f"content is larger than the {size} bytes its name declares")
        digest.update(chunk)
        sink.write(chunk)
    if total != size:
        raise IntegrityError(f"content is {total} bytes, its name declares {size}")
    if digest.digest() != md5:
        raise IntegrityError(f"content MD5 {digest.hexdigest()} does not match its name's "
                             f"{md5.hex()}")


def spool(expect: int = 0) -> BinaryIO:
    """A seekable scratch file: memory up to SPILL_BYTES, then a 0600 file in $TMPDIR.

    When ``expect`` (the bytes the caller expects to write) is larger than SPILL_BYTES it
    is a file from the start: filling memory only to copy it out would cost twice SPILL_BYTES.
    """
    if expect > SPILL_BYTES:
        return tempfile.TemporaryFile()
    # (a SpooledTemporaryFile is an IO[bytes], as good as a BinaryIO here: typeshed does
    # not say it is one)
    return cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=SPILL_BYTES))


# =====================================================================================
# Bandwidth cap: one token bucket for every process and thread of a run
# =====================================================================================
#
# bandwidth_limit caps the object data read from and written to the destination.  A cap
# per process would let five workers use five times the limit, so the bucket lives in
# shared memory that the parent makes before it forks the workers: every process, and
# every thread in each, draws from one budget.  The storages apply it (their ``throttle``).

THROTTLE_LOCK_SECONDS = 1.0   # a process killed while it held the bucket's lock (SIGKILL)
                              # holds up the others this long at most; then they go on


class Throttle:
    """A token bucket of ``rate`` bytes per second, shared by this process, the processes
    forked from it after it was made, and all their threads.

    The bucket holds at most one second of tokens (the largest burst) and starts full.
    take(n) spends n tokens at once, going into debt when there are not enough, and sleeps
    until its debt is paid: whoever comes meanwhile finds the debt and waits behind it, so
    that together they never pass more than ``rate`` bytes a second after the first burst.
    Pickled (a storage sent to a helper process), it stands for the same bucket in any
    process forked from the one that made it.
    """

    _made: ClassVar[dict[bytes, "Throttle"]] = {}    # this process family's buckets

    def __init__(self, rate: int):
        assert rate > 0, rate
        self.rate = rate
        self._tokens = multiprocessing.RawValue("d", float(rate))
        self._stamp = multiprocessing.RawValue("d", time.monotonic())
        self._lock = multiprocessing.Lock()
        self.ident = os.urandom(8)
        Throttle._made[self.ident] = self

    def __reduce__(self) -> tuple:
        return _same_throttle, (self.ident, self.rate)

    def take(self, size: int) -> None:
        """Wait until ``size`` more bytes may pass."""
        while size > 0:
            part = min(size, self.rate)
            locked = self._lock.acquire(timeout=THROTTLE_LOCK_SECONDS)
            try:
                now = time.monotonic()
                tokens = min(float(self.rate), self._tokens.value
                             + (now - self._stamp.value) * self.rate) - part
                self._tokens.value, self._stamp.value = tokens, now
            finally:
                if locked:
                    self._lock.release()
            if tokens < 0:
                time.sleep(-tokens / self.rate)
            size -= part


def _same_throttle(ident: bytes, rate: int) -> Throttle:
    """The bucket a pickled Throttle stands for.  A process that was not forked from its
    maker (a platform without fork) cannot share it, and gets a bucket of its own."""
    return Throttle._made.get(ident) or Throttle(rate)


_C = TypeVar("_C", bound="Closing")


class Closing:
    """What a stream wrapper needs to be used in a ``with`` block: leaving it closes."""

    close: Callable[[], None]      # the wrapper's own

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class Metered(Closing):
    """A stream whose reads and writes pass through a Throttle; seek, tell and the rest go
    to the stream itself.  It stands in for the stream it wraps: where a BinaryIO is
    expected it is cast to one (metered())."""

    def __init__(self, stream: Any, throttle: Throttle):
        self.stream, self.throttle = stream, throttle

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.throttle.take(len(data))
        return data

    def write(self, data: bytes) -> int:
        self.throttle.take(len(data))
        return self.stream.write(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.stream.seek(offset, whence)

    def tell(self) -> int:
        return self.stream.tell()

    def close(self) -> None:
        self.stream.close()


def metered(stream: Any, throttle: Optional[Throttle]) -> BinaryIO:
    """``stream`` through ``throttle``, or ``stream`` itself when there is none.  The
    stream may be one of our wrappers (a Closing): what callers use of a BinaryIO, it has."""
    return cast(BinaryIO, Metered(stream, throttle)) if throttle else stream


# =====================================================================================
# Storages: one contract (the Storage protocol), a local folder and an S3 bucket
# =====================================================================================
#
# The driver knows storages only through the Storage protocol below: what a storage
# must do, and capabilities (``remote``, ``ordered``; ``is_unchanged``) instead of type
# checks, and one budget (``throttle``).
# Each storage turns its own failures into our errors (MissingError, TransferError,
# StorageError, OSError), so no caller needs to know its library.  A new backend is one
# class here and one line in make_storage(); tests/test_storage.py runs the contract
# suite over every backend.

# ------------------- the contract: entries, locks, thaws, reports and the Storage protocol

R = TypeVar("R")
TMP_PREFIX = ".esb-tmp-"          # our temporary files: .esb-tmp-<pid>@<host>-<random>
TMP_NAME = re.compile(re.escape(TMP_PREFIX) + r"\d+@[^/]*-[a-z0-9_]+\Z")   # such a name
                                  # whole (a random part without dots: a backup object's
                                  # name, ending in .enc or .ver, is never one)
FOREIGN_TMP_AGE = 24 * 3600       # seconds; a temporary file of another host (or container)
                                  # is only removed when it has not been written for this long
MEMORY_WRITE = 1024 * 1024        # bytes; a local write expected to be at most this big is
                                  # made in memory and written with one system call
FOLDER_FDS = 64                   # open folders a RestoreFolder keeps per process (of the
                                  # 1024 descriptors a process usually may have)
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW   # a folder, never a link to one


@lru_cache(maxsize=1)
def host_tag() -> str:
    """This host's name as it goes into temporary file names (a container has its own)."""
    import socket
    return re.sub(r"[^A-Za-z0-9._]", "_", socket.gethostname())[:40] or "host"


def temp_prefix() -> str:
    """The prefix of this process's temporary files: whose they are, for stale-file cleanup."""
    return f"{TMP_PREFIX}{os.getpid()}@{host_tag()}-"


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of our temporary files' (temp_prefix() and a random
    part); a file of the user's that merely starts with TMP_PREFIX is not."""
    return name.startswith(TMP_PREFIX) and TMP_NAME.match(name) is not None


class Entry(NamedTuple):
    key: str     # "/"-separated path relative to the storage root
    size: int    # bytes
    mtime: int   # whole seconds
    storage_class: str = ""   # as the listing names it; "" for STANDARD, or where a
                              # storage has no classes


ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")   # S3 storage classes whose objects can be
                                  # neither read nor copied (renamed) until thawed for some
                                  # days by a RestoreObject request; GLACIER_IR reads at once


def other_class(storage_class: Optional[str]) -> str:
    """An S3 storage class as an Entry holds it: "" for STANDARD (or none said)."""
    return "" if storage_class in (None, "", "STANDARD") else sys.intern(storage_class)


LOCK_MARGIN_DAYS = 7                # a lock ending within this many days is extended


class ObjectLock(NamedTuple):
    """The Object Lock retention every object a backup writes gets (object_lock_mode and
    object_lock_days), sent in the request that writes it: no moment without a lock."""

    mode: str            # "GOVERNANCE" or "COMPLIANCE", as S3 spells them
    days: int

    def until(self, moment: float) -> datetime.datetime:
        """The retain-until date of an object written at ``moment`` (epoch seconds)."""
        return datetime.datetime.fromtimestamp(int(moment) + self.days * 86400,
                                               datetime.timezone.utc)

    def args(self, moment: float) -> dict[str, Any]:
        """boto3's parameters of a write that locks its object."""
        return {"ObjectLockMode": self.mode, "ObjectLockRetainUntilDate": self.until(moment)}

    def due(self, modified: int, moment: int) -> Optional[int]:
        """When an unchanged object written (LastModified) at ``modified`` is to be locked
        until, if its lock ends within LOCK_MARGIN_DAYS (a third of the days, if less) of
        ``moment``; None when it does not (or the moment is unknown).  Locks end on a grid:
        the write's lock at ``modified`` + days, and each extension adds whole periods of
        days to that, so where a lock ends is known from LastModified alone, and an
        object is extended once a period (by every run inside its margin)."""
        if not modified:
            return None
        period, margin = self.days * 86400, self.margin()
        ends = modified + max(1, -(-(moment - modified) // period)) * period
        return ends + period if ends - moment < margin else None

    def margin(self) -> int:
        """Seconds before its end within which a run extends a lock (see due)."""
        return min(LOCK_MARGIN_DAYS * 86400, self.days * 86400 // 3)

    def extension(self) -> str:
        """What each run does to keep unchanged objects locked, for the start of a run."""
        margin = self.margin()
        within = f"{margin // 86400} days" if margin % 86400 == 0 else f"{margin // 3600} hours"
        return (f"each run extends the lock of an unchanged object whose lock ends within "
                f"{within}, by whole periods of {self.days} days from when it was written")

    def headers(self, moment: float) -> dict[str, str]:
        """The same as the request headers S3Wire sends (ISO 8601)."""
        return {"x-amz-object-lock-mode": self.mode,
                "x-amz-object-lock-retain-until-date":
                    self.until(moment).strftime("%Y-%m-%dT%H:%M:%SZ")}


class Thaw(NamedTuple):
    """Whether an object of an archive class can be read now."""

    state: str         # "archived" (no thaw asked), "thawing" (under way) or "thawed"
    until: str = ""    # when a thawed copy goes away: ISO 8601, UTC ("" when not said)


@dataclass
class ListReport:
    """What a listing could not see or chose to skip."""

    problems: list[str] = field(default_factory=list)   # failures: the run exits non-zero
    notes: list[str] = field(default_factory=list)      # skipped special files, links,
                                                        # housekeeping done
    blind: list[str] = field(default_factory=list)      # keys, or folders ending in "/",
                                                        # that could not be read
    bad_names: list[str] = field(default_factory=list)  # .enc objects whose name does not
                                                        # decode (why, for each)
    skipped: int = 0          # files left out as not regular files (each one in notes too)
    ignored: int = 0          # files and folders left out by ignore_regex ...
    ignored_keys: list[str] = field(default_factory=list)   # ... and their keys, when the
                                                        # listing was asked to name them
    protection: Optional["Protection"] = None   # the destination's, when a backup read it
    foreign: int = 0          # objects listed whose paths another slice owns (--slice)

    def take(self) -> "ListReport":
        """What this report holds, leaving it empty (a listing goes on adding to it)."""
        taken = replace(self)
        self.problems, self.notes, self.blind, self.bad_names = [], [], [], []
        self.skipped, self.ignored, self.ignored_keys = 0, 0, []
        self.protection, self.foreign = None, 0
        return taken

    def add(self, other: "ListReport") -> None:
        """Add what another report (a helper process's) holds to this one."""
        self.problems += other.problems
        self.notes += other.notes
        self.blind += other.blind
        self.bad_names += other.bad_names
        self.skipped += other.skipped
        self.ignored += other.ignored
        self.ignored_keys += other.ignored_keys
        self.protection = other.protection or self.protection
        self.foreign += other.foreign


@dataclass(frozen=True)
class StorageConfig:
    """One storage section of the config (src, dest or restore): its keys' values, as text.

    Which kind of storage it is comes from STORAGE_KINDS (the one kind whose choosing key
    is set: see storage_kinds_of()), not from these fields.  The built-in kinds' keys are
    fields, so that their code reads them typed; a key of a registered kind that has no
    field here is kept in ``extra``, and every key is read alike with get()."""

    local_path: Optional[str] = None
    aws_access_key_id: Optional[str] = None
    aws_secret_access_key: Optional[str] = field(default=None, repr=False)
    s3_bucket: Optional[str] = None
    base_path: Optional[str] = None
    endpoint_url: Optional[str] = None
    signature_version: Optional[str] = None
    region_name: Optional[str] = None
    storage_class: Optional[str] = None
    extra: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    # ^ (key, value) of the set keys that are no field, sorted (a registered kind's own)

    @classmethod
    def of(cls, values: dict[str, Optional[str]]) -> "StorageConfig":
        """From key -> value: the fields' keys as fields, the rest (set ones) in extra."""
        own = {k: v for k, v in values.items() if k in STORAGE_FIELDS}
        extra = tuple(sorted((k, v) for k, v in values.items()
                             if k not in STORAGE_FIELDS and v is not None))
        return cls(**own, extra=extra)

    def get(self, key: str) -> Optional[str]:
        """The value of any storage key (None when unset)."""
        if key in STORAGE_FIELDS:
            value: Optional[str] = getattr(self, key)
            return value
        return dict(self.extra).get(key)


STORAGE_FIELDS = frozenset(f.name for f in dataclasses.fields(StorageConfig)) - {"extra"}


@dataclass(frozen=True)
class StorageUse:
    """How a run uses a storage (make_storage's arguments, for a kind's ``make``)."""

    confined: bool = False       # a restore target: no write leaves the root
    reap: bool = False           # remove what killed runs of ours left, where we write
    requests: int = 0            # requests a remote storage may have in flight at once here
    throttle: Optional[Throttle] = None   # the bandwidth budget of its object data
    private: bool = True         # confined: folders made 0700
    owned: bool = False          # confined: the root must be this user's own folder
    source: bool = False         # a backup's source: nothing in it is ours
    lock: Optional[ObjectLock] = None     # the Object Lock retention of what it writes


@dataclass(frozen=True)
class StorageKind:
    """One kind of storage (a row of STORAGE_KINDS): a section whose ``key`` is set is of
    this kind.  ``keys``: every key it reads, ``key`` among them, in the order the README
    lists them; ``make``: the storage, from the section and its use; ``check``: the
    kind's own problems with a section, as (key, problem) pairs."""

    key: str
    keys: tuple[str, ...]
    make: Callable[[StorageConfig, StorageUse], "Storage"]
    check: Optional[Callable[[StorageConfig], list[tuple[str, str]]]] = None


STORAGE_KINDS: dict[str, StorageKind] = {}   # choosing key -> kind, in registration order


def register_storage(kind: StorageKind) -> StorageKind:
    """Add a kind of storage: its keys are read from then on (file and environment),
    checked, documented (README must name their variables) and built by make_storage()."""
    STORAGE_KINDS[kind.key] = kind
    return kind


def storage_keys() -> tuple[str, ...]:
    """Every key a storage section may hold: the registered kinds', in order, once each."""
    return tuple(dict.fromkeys(key for kind in STORAGE_KINDS.values() for key in kind.keys))


def storage_kinds_of(config: StorageConfig) -> list[StorageKind]:
    """The kinds whose choosing key the section sets (one, in a valid configuration)."""
    return [kind for kind in STORAGE_KINDS.values() if config.get(kind.key)]


class Storage(Protocol):
    """What every storage does.  Keys are "/"-separated paths relative to the storage's
    root.  A verb that meets a missing file raises MissingError, a failed request
    TransferError (or OSError); nothing else a storage raises is an expected failure."""

    remote: ClassVar[bool]
    """True when requests wait on a network: the workers then overlap them on threads,
    and the parent lists the storage in a short-lived helper process (so that the
    workers it forks do not inherit the storage's client library)."""

    ordered: ClassVar[bool]
    """True when list_files yields keys in ascending order (Python's str order, which is
    S3's UTF-8 byte order): a backup then plans as the listing comes, holding neither
    listing.  The driver checks the order as it reads, and a listing that breaks it is
    listed again and sorted, so a storage whose service only mostly keeps the order may
    say True."""

    throttle: Optional[Throttle]
    """The bandwidth budget (bandwidth_limit), or None.  Every byte read from a stream that
    open() returns, and every byte store() sends or writes, passes through it, in whichever
    process or thread; listings, stat, rename and remove do not.  Only the destination has
    one (see make_storage)."""

    def prepare(self, create: bool, missing_ok: bool = False) -> bool:
        """Check the root is there and usable, creating it if ``create``; False when it is
        missing and ``missing_ok`` (a dry run against a destination not made yet), else
        StorageError naming the problem and its fix."""

    def housekeeping(self) -> list[str]:
        """Remove what killed runs of ours left behind here (unfinished uploads); a note
        for each thing done.  Called before a backup writes here."""

    def lock_notes(self) -> list[str]:
        """Check the storage holds the Object Lock this run's writes ask for (StorageError
        naming the fix if not); notes on the locks it applies by itself.  Called before a
        backup writes here."""

    def extend_lock(self, key: str, until: int) -> bool:
        """Keep the object ``key`` locked (Object Lock) until ``until`` (epoch seconds);
        False when it was already."""

    def kept_lock(self) -> Optional["ObjectLock"]:
        """The retention a backup keeps its unchanged objects under (see ObjectLock.due):
        the object_lock settings, else the bucket's default retention; None: none.  Read
        after lock_notes(), from what it read."""

    def list_files(self, report: ListReport,
                   skip: Optional[Callable[[str], bool]] = None) -> Iterator[Entry]:
        """Every file under the root as an Entry.  What could not be read goes into
        ``report`` (its backups are then left alone).  ``skip(key)`` leaves out a file, and
        a whole folder when it is true for the folder's key plus "/"."""

    def inside(self, other: "Storage") -> Optional[str]:
        """The key of the folder where ``other`` lies inside this storage ("" for the root
        itself), or None when it does not (a destination inside the source is not listed)."""

    def stat(self, key: str) -> Entry:
        """The file's size and mtime now."""

    def open(self, key: str) -> ContextManager[BinaryIO]:
        """A readable binary stream of the file."""

    def read(self, key: str, limit: int) -> bytes:
        """The file's first ``limit`` bytes (all of a small file), in as few calls as the
        storage allows."""

    def is_unchanged(self, stream: BinaryIO, entry: Entry) -> bool:
        """After reading ``stream`` (from open()): whether its file still has the size and
        mtime of ``entry``.  A file written while read fails this check."""

    def store(self, folder: str, fill: Callable[[BinaryIO], R], key_of: Callable[[R], str],
              mtime: Optional[int] = None, mode: int = 0o600, expect: int = 0
              ) -> tuple[R, str]:
        """Atomic write: ``fill(sink)`` writes the bytes, ``key_of(fill's result)`` names
        them (a key inside ``folder``).  The file appears complete under that key or not at
        all, replacing what was there.  ``mtime`` and ``mode`` are applied where the
        storage keeps them; ``expect`` is a hint of how many bytes come.  Returns (fill's
        result, key)."""

    def put(self, key: str, data: bytes) -> None:
        """store() of bytes already in memory under ``key``, without copying them first."""

    def batch(self) -> ContextManager[dict[str, BaseException]]:
        """Group the store() calls made inside the block so that they are made durable
        together.  Yields a dict that, after the block, maps the key of each file that did
        not make it to its error; if the block itself fails, none of its files appears."""

    def rename(self, old: str, new: str, size: int = 0) -> None:
        """Give a file a new key (``size``: its bytes, for storages that copy)."""

    def remove(self, key: str) -> None:
        """Delete a file; removing what is not there is no error."""

    def remove_many(self, keys: list[str]) -> dict[str, BaseException]:
        """remove() of many keys, in as few requests as the storage allows; the error of
        each key that could not be removed."""

    def discard_unfinished(self) -> None:
        """On a stop: remove what store() calls still running in this process have
        written (another thread may be in the middle of one that will never finish)."""

    def thaw_state(self, key: str) -> Thaw:
        """For a file listed in an archive class (ARCHIVE_CLASSES): whether a thaw was asked
        for, and whether it is done (the file can then be read and renamed)."""

    def thaw(self, key: str, days: int, tier: str) -> bool:
        """Ask for an archived file to be thawed, readable for ``days``, at ``tier`` (Bulk,
        Standard or Expedited); False when a thaw of it was under way already."""

    def versioning(self) -> str:
        """Whether the storage keeps every version of its files: "Enabled", "Suspended"
        (it did), or "" (it never did: a local folder)."""

    def list_versions(self, moment: int, report: ListReport) -> Iterator[tuple[Entry, str]]:
        """Where versioning() is not "": the files as they stood at ``moment``, each with
        the id of that version."""

    def protection(self, probe: bool = True) -> Optional["Protection"]:
        """What keeps the files from keys that can write here (--check-protection); with
        ``probe``, the lifecycle and whether those keys can destroy a version, tried on an
        object of its own (without: versioning and lock only, as a backup starts).  None:
        nothing does (a local folder)."""

    def pin(self, versions: dict[str, str]) -> None:
        """From now on, in this process and those it forks, open() and read() read each
        file of ``versions`` in the version given (list_versions' ids)."""


# -------------------- local: LocalStorage, and RestoreFolder (the folder a restore writes)

def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@lru_cache(maxsize=None)
def libc_function(name: str) -> Optional[Callable[..., int]]:
    """A C library function Python's os module lacks (syncfs, mallopt, malloc_trim); None
    where this platform's C library has no such function."""
    try:
        import ctypes
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None


def _libc_syncfs() -> Optional[Callable[[int], int]]:
    """Linux's syncfs(2); None elsewhere."""
    return libc_function("syncfs")


def _syncfs(folders: Iterable[str]) -> bool:
    """syncfs() once for each file system these folders live on (one journal commit for
    everything written there); False where the platform has none, or one failed."""
    syncfs = _libc_syncfs()
    if syncfs is None:
        return False
    synced = True
    for folder in {os.stat(folder).st_dev: folder for folder in folders}.values():
        fd = os.open(folder, os.O_RDONLY)
        try:
            synced &= syncfs(fd) == 0
        finally:
            os.close(fd)
    return synced


def _sync_files(paths: list[str], folders: set[str]) -> None:
    """Make these files' data durable (they lie in ``folders``): syncfs, else an fsync of
    each."""
    if not _syncfs(folders):
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _sync_folders(folders: set[str]) -> None:
    """Make the names just given in these folders durable: syncfs, else an fsync of each
    folder."""
    if not _syncfs(folders):
        for folder in folders:
            _fsync_dir(folder)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


def _pid_alive(pid: int) -> bool:
    """True while a process with this pid runs; a zombie (killed, not yet reaped) is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as info:
            return info.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


class LocalStorage:
    """A folder on a local file system."""

    remote: ClassVar[bool] = False
    ordered: ClassVar[bool] = True

    def __init__(self, root: str, reap: bool = False, throttle: Optional[Throttle] = None,
                 source: bool = False):
        self.root = os.path.abspath(os.path.expanduser(root))
        self.throttle = throttle
        self.reap = reap     # remove stale temporary files of ours: only where we write (a
                             # backup's destination; a RestoreFolder always)
        self.source = source      # a backup's source: we never write there, so a name with
                                  # our temporary prefix is the user's file, listed as any
        self._ready: set[str] = set()        # folders known to exist
        self._pending: Optional[list[tuple]] = None   # see batch() (and RestoreFolder's)
        self._unfinished: set[str] = set()   # temporary files not yet renamed or removed

    def __str__(self) -> str:
        return self.root

    def _full(self, key: str) -> str:
        if not key:
            return self.root
        return f"{self.root}/{key}" if os.sep == "/" else os.path.join(self.root,
                                                                         *key.split("/"))

    def prepare(self, create: bool, missing_ok: bool = False) -> bool:
        """Check the root (creating it if asked); False when it is missing and missing_ok."""
        if create:
            try:
                os.makedirs(self.root, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create folder {self.root}: {exc.strerror}") from None
        if missing_ok and not os.path.lexists(self.root):
            return False
        if not os.path.isdir(self.root):
            raise StorageError(f"folder {self.root} does not exist (is the disk mounted? is "
                               "local_path right?)")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise StorageError(f"folder {self.root} is not readable by this user")
        return True

    def housekeeping(self) -> list[str]:
        """Nothing to do before a run: stale temporary files are removed as the listing (and,
        for a restore target, each folder written to) meets them."""
        return []

    def lock_notes(self) -> list[str]:
        """A folder has no Object Lock (run_backup refuses lock settings for one)."""
        return []

    def extend_lock(self, key: str, until: int) -> bool:
        raise StorageError(f"{self} is a folder, which has no Object Lock")

    @staticmethod
    def kept_lock() -> None:
        return None

    def inside(self, other: Storage) -> Optional[str]:
        if not isinstance(other, LocalStorage):
            return None
        relative = os.path.relpath(other.root, self.root)
        if relative == os.curdir:
            return ""
        if relative == os.pardir or relative.startswith(os.pardir + os.sep):
            return None
        return relative.replace(os.sep, "/")

    def list_files(self, report: ListReport,
                   skip: Optional[Callable[[str], bool]] = None) -> Iterator[Entry]:
        """Regular files (and symlinks to them) in key order: each folder's names sorted,
        a folder's files where its name plus "/" sorts.  Our temp files are skipped (but
        in a source), and stale ones (their process is gone) removed where we write.
        ``skip(key)`` drops a file, and a whole folder when it is true for the folder's key
        plus "/".  Holds the names of the folders it is in, not the files it has listed."""
        walking = [self._names("", report)]
        while walking:
            folder, directory, names = walking[-1]
            for name in names:
                key = folder + name
                if name.endswith("/"):
                    if not (skip and skip(key)):
                        walking.append(self._names(key, report))
                        break
                elif not (skip and skip(key)):
                    entry = self._file(directory, name, key, report)
                    if entry is not None:
                        yield entry
            else:
                walking.pop()

    def _names(self, folder: str, report: ListReport) -> tuple[str, str, Iterator[str]]:
        """The folder (a key ending in "/", or "" for the root), its path, and the names
        of what it holds in sorted order, a folder's with "/" at its end (none when it
        cannot be read: reported)."""
        directory = self._full(folder[:-1])
        names = []
        try:
            with os.scandir(directory) as scan:
                for item in scan:
                    try:
                        inner = item.is_dir(follow_symlinks=False)
                    except OSError:
                        inner = False      # a file then: reading it says what is wrong
                    names.append(item.name + "/" if inner else item.name)
        except OSError as exc:
            report.problems.append(f"cannot read folder {directory}: {exc.strerror}")
            report.blind.append(folder or "/")
            names = []
        names.sort()
        return folder, directory + os.sep, iter(names)

    def _file(self, directory: str, name: str, key: str, report: ListReport
              ) -> Optional[Entry]:
        """The Entry of the file ``name`` the listing met in ``directory`` (a path ending
        in a separator), or None (skipped, vanished or unreadable: reported as such)."""
        path = directory + name
        if not self.source and is_temp_name(name):
            if self.reap:
                self._reap(path, name)
            return None
        try:
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                try:
                    info = os.stat(path)
                except FileNotFoundError:
                    report.notes.append(f"skipped {key}: dangling symbolic link")
                    report.skipped += 1
                    return None
        except FileNotFoundError:
            return None     # vanished between listing and stat: nothing to back up
        except OSError as exc:
            report.problems.append(f"cannot read {key}: {exc.strerror}")
            report.blind.append(key)
            return None
        if stat.S_ISREG(info.st_mode):
            return Entry(key, info.st_size, max(0, int(info.st_mtime)))
        report.notes.append(f"skipped {key}: " + ("symbolic link to a folder" if
                            stat.S_ISDIR(info.st_mode) else "not a regular file"))
        report.skipped += 1
        return None

    @staticmethod
    def _reap(path: str, name: str, dir_fd: Optional[int] = None) -> None:
        """Remove a temporary file whose writer is gone: a dead process of this host, or,
        for another host's (whose processes we cannot see), one untouched for a day.
        With ``dir_fd``, ``path`` is the name in that open folder."""
        owner, _, _ = name[len(TMP_PREFIX):].rpartition("-")
        pid_text, _, host = owner.partition("@")
        gone = False
        if host == host_tag() and pid_text.isdigit():
            gone = int(pid_text) != os.getpid() and not _pid_alive(int(pid_text))
        else:
            with contextlib.suppress(OSError):
                gone = time.time() - os.stat(path, dir_fd=dir_fd).st_mtime > FOREIGN_TMP_AGE
        if gone:
            with contextlib.suppress(OSError):
                os.remove(path, dir_fd=dir_fd)

    def stat(self, key: str) -> Entry:
        try:
            info = os.stat(self._full(key))
        except FileNotFoundError:
            raise MissingError(f"{key} no longer exists") from None
        return Entry(key, info.st_size, max(0, int(info.st_mtime)))

    def open(self, key: str) -> BinaryIO:
        try:
            stream = open(self._full(key), "rb")
        except FileNotFoundError:
            raise MissingError(f"{key} no longer exists") from None
        return metered(stream, self.throttle)

    def read(self, key: str, limit: int) -> bytes:
        # (no stream object: half the CPU of open() and read() for a file of a few KB)
        try:
            fd = os.open(self._full(key), os.O_RDONLY)
        except FileNotFoundError:
            raise MissingError(f"{key} no longer exists") from None
        parts, left = [], limit
        try:
            while left > 0:
                part = os.read(fd, left)
                if not part:
                    break
                parts.append(part)
                left -= len(part)
        finally:
            os.close(fd)
        data = b"".join(parts)
        if self.throttle:
            self.throttle.take(len(data))
        return data

    def put(self, key: str, data: bytes) -> None:
        self.store(key.rpartition("/")[0], lambda sink: sink.write(data), lambda _: key)

    @staticmethod
    def is_unchanged(stream: BinaryIO, entry: Entry) -> bool:
        now = os.fstat(stream.fileno())
        return now.st_size == entry.size and max(0, int(now.st_mtime)) == entry.mtime

    def store(self, folder: str, fill: Callable[[BinaryIO], R], key_of: Callable[[R], str],
              mtime: Optional[int] = None, mode: int = 0o600, expect: int = 0
              ) -> tuple[R, str]:
        """Write to a temporary file beside the target, fsync, rename, fsync the folder.

        Inside ``batch()`` the flush and the rename wait for the end of the batch.
        """
        directory = self._folder(folder)
        # The name is chosen before the file exists, so that a stop (SIGTERM) landing in
        # the middle of creating it still finds the name to remove.
        tmp = os.path.join(directory, temp_prefix() + os.urandom(6).hex())
        self._unfinished.add(tmp)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            result = self._fill(fd, fill, mtime, mode, expect)
            key = key_of(result)
            assert key.rpartition("/")[0] == folder, (key, folder)
            if self._pending is not None:
                self._pending.append((tmp, key, directory))
                return result, key
            os.replace(tmp, self._full(key))
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            self._unfinished.discard(tmp)
            raise
        self._unfinished.discard(tmp)
        _fsync_dir(directory)
        return result, key

    def _fill(self, fd: int, fill: Callable[[BinaryIO], R], mtime: Optional[int], mode: int,
              expect: int) -> R:
        """Write a new file through its descriptor ``fd`` (closed here): ``fill(sink)``'s
        bytes, then mode and mtime (no path lookups), then fsync outside a batch, so that
        they are as durable as the contents.  Returns what ``fill`` returned."""
        def finish(fd: int) -> None:
            if mode != 0o600:
                os.fchmod(fd, mode)
            if mtime is not None:
                os.utime(fd, (mtime, mtime))
            if self._pending is None:
                os.fsync(fd)

        if 0 < expect <= MEMORY_WRITE:      # made in memory, written at once
            try:
                with io.BytesIO() as memory:
                    result = fill(memory)
                    with memory.getbuffer() as data:
                        if self.throttle:
                            self.throttle.take(len(data))
                        _write_all(fd, data)
                finish(fd)
            finally:
                os.close(fd)
        else:
            with os.fdopen(fd, "w+b") as sink:
                result = fill(metered(sink, self.throttle))
                sink.flush()
                finish(sink.fileno())
        return result

    def _folder(self, folder: str) -> str:
        """The folder's path, created once per process."""
        directory = self._full(folder)
        if directory not in self._ready:
            os.makedirs(directory, exist_ok=True)
            self._ready.add(directory)
        return directory

    @contextlib.contextmanager
    def batch(self) -> Iterator[dict[str, BaseException]]:
        """Small writes: store() leaves each file under its temporary name; at the end one
        file-system sync makes them all durable, then they are renamed into place and one
        more makes the new names durable.  Two flushes for the batch instead of two per
        file.  A file whose rename fails is in the yielded dict."""
        pending: list[tuple[str, str, str]] = []     # (temporary path, key, folder)
        self._pending = pending
        failed: dict[str, BaseException] = {}
        done = 0
        try:
            yield failed
            folders = {directory for _, _, directory in pending}
            _sync_files([tmp for tmp, _, _ in pending], folders)
            for tmp, key, _ in pending:
                try:
                    os.replace(tmp, self._full(key))
                except OSError as exc:
                    failed[key] = exc
                    with contextlib.suppress(OSError):
                        os.remove(tmp)
                self._unfinished.discard(tmp)
                done += 1       # only now: a stop before this line still removes tmp
            _sync_folders(folders)
        except BaseException:
            for tmp, _, _ in pending[done:]:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
                self._unfinished.discard(tmp)
            raise
        finally:
            self._pending = None

    def discard_unfinished(self) -> None:
        """Remove every temporary file this process is still writing here: on a stop, other
        threads may be in the middle of a store() that will never finish."""
        for tmp in list(self._unfinished):
            with contextlib.suppress(OSError):
                os.remove(tmp)
            self._unfinished.discard(tmp)

    def rename(self, old: str, new: str, size: int = 0) -> None:
        os.replace(self._full(old), self._full(new))
        _fsync_dir(os.path.dirname(self._full(new)))

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self._full(key))

    def remove_many(self, keys: list[str]) -> dict[str, BaseException]:
        failed: dict[str, BaseException] = {}
        for key in keys:
            try:
                self.remove(key)
            except OSError as exc:
                failed[key] = exc
        return failed

    @staticmethod
    def thaw_state(key: str) -> Thaw:
        """Nothing in a folder is ever archived: always readable."""
        return Thaw("thawed")

    @staticmethod
    def thaw(key: str, days: int, tier: str) -> bool:
        return False

    @staticmethod
    def versioning() -> str:
        return ""             # a folder keeps no versions of its files

    def list_versions(self, moment: int, report: ListReport) -> Iterator[tuple[Entry, str]]:
        raise StorageError(f"{self} keeps no versions of its files")

    def pin(self, versions: dict[str, str]) -> None:
        raise StorageError(f"{self} keeps no versions of its files")    # (see list_versions)

    @staticmethod
    def protection(probe: bool = True) -> None:
        return None           # whoever can write to a folder can delete it all


def _syncfs_at(folders: Iterable[int]) -> bool:
    """_syncfs() of open folders (descriptors)."""
    syncfs = _libc_syncfs()
    if syncfs is None:
        return False
    synced = True
    for fd in {os.fstat(fd).st_dev: fd for fd in folders}.values():
        synced &= syncfs(fd) == 0
    return synced


_CHECKED_ROOTS: dict[str, tuple[int, int]] = {}   # restore folder -> (device, inode) of the
    # folder prepare() checked; the worker processes forked after it open only that one


class RestoreFolder(LocalStorage):
    """A restore target: a local folder that no write leaves, even while another user who
    may write in it swaps its folders for symbolic links.

    Below the root nothing is reached by a path: each folder is opened within its parent's
    descriptor without following a link (FOLDER_FLAGS), a missing one made there first;
    each file is created there (O_EXCL, O_NOFOLLOW) under a temporary name and renamed
    within the same descriptor.  A descriptor stays the folder it was opened as, whatever
    becomes of its path, so a folder swapped for a link fails the files not yet in it, and
    the files written go where they were meant to go; the root itself must stay the folder
    the run's prepare() checked (_CHECKED_ROOTS).  The open folders are kept (up to
    FOLDER_FDS, closed only where no write can be using one: at a batch's end, or before a
    write outside a batch, since writes run at once only inside a batch).

    ``private``: the folders made here are 0700 (their files out of other users' reach),
    else as the umask says.  ``owned``: the root must be a folder of this user and not a
    link (the default restore folder, a fixed name in a temporary folder every user may
    write in): one made here (0700 either way), or refused."""

    def __init__(self, root: str, private: bool = True, owned: bool = False,
                 throttle: Optional[Throttle] = None):
        super().__init__(root, reap=True, throttle=throttle)
        self.folder_mode = 0o700 if private else 0o777
        self.owned = owned
        self._fds: dict[str, int] = {}   # folder key ("" the root) -> its open descriptor
        self._opening = threading.Lock()
        self._unfinished_at: set[tuple[int, str]] = set()    # (folder, temporary name)
        # (and batch()'s _pending holds (folder, temporary name, name, key))

    def prepare(self, create: bool, missing_ok: bool = False) -> bool:
        """Check the root (creating it, 0700 when private or owned, if asked) and open it."""
        if create:
            try:
                if self.owned:     # made here, or refused below when it is not ours
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(self.root, 0o700)
                else:
                    os.makedirs(self.root, self.folder_mode, exist_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot create folder {self.root}: {exc.strerror}") from None
        if self.owned and os.path.lexists(self.root):
            kind = os.lstat(self.root).st_mode
            if not stat.S_ISDIR(kind):
                raise self._not_ours("is a symbolic link" if stat.S_ISLNK(kind) else
                                     "is not a folder")
        if not super().prepare(False, missing_ok):
            return False
        _CHECKED_ROOTS.pop(self.root, None)
        info = os.fstat(self._open(""))
        _CHECKED_ROOTS[self.root] = (info.st_dev, info.st_ino)
        return True

    def _not_ours(self, what: str) -> StorageError:
        return StorageError(
            f"refusing to restore into {self.root}: it {what}, so another user may have made "
            "it to catch the restore; remove it, or set restore.local_path (environment "
            "RESTORE_LOCAL_PATH) to a folder of yours")

    def _open_root(self) -> int:
        try:
            fd = os.open(self.root, FOLDER_FLAGS if self.owned else
                         FOLDER_FLAGS & ~os.O_NOFOLLOW)
        except OSError as exc:
            if self.owned and exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._not_ours("is a symbolic link" if os.path.islink(self.root) else
                                     "is not a folder") from None
            raise StorageError(f"cannot open folder {self.root}: {exc.strerror}") from None
        info = os.fstat(fd)
        if self.owned and info.st_uid != os.geteuid():
            os.close(fd)
            raise self._not_ours(f"belongs to another user (uid {info.st_uid})")
        if _CHECKED_ROOTS.get(self.root, (info.st_dev, info.st_ino)) != (info.st_dev,
                                                                          info.st_ino):
            os.close(fd)
            raise StorageError(f"the restore folder {self.root} was replaced by another one "
                               "while the restore ran; check it, then restore again")
        return fd

    def _open(self, folder: str) -> int:
        """The open descriptor of ``folder`` (a key without its final "/", "" for the
        root), the folders on the way made as needed."""
        fd = self._fds.get(folder)
        if fd is not None:
            return fd
        with self._opening:        # (threads of a batch: each folder opened once)
            fd = self._fds.get(folder)
            if fd is None:
                if "" not in self._fds:
                    self._fds[""] = self._open_root()
                fd = self._fds[folder] = self._walk(folder) if folder else self._fds[""]
                if folder not in self._ready:
                    # A restore target is never listed: remove what killed runs left here.
                    self._ready.add(folder)
                    with os.scandir(fd) as scan:
                        for item in scan:
                            if is_temp_name(item.name):
                                self._reap(item.name, item.name, fd)
        return fd

    def _walk(self, folder: str) -> int:
        """Open ``folder`` from the deepest folder on its way that is open already."""
        parts = folder.split("/")
        start = len(parts) - 1
        while start and "/".join(parts[:start]) not in self._fds:
            start -= 1
        fd, own = self._fds["/".join(parts[:start])], False
        try:
            for depth in range(start, len(parts)):
                inner = self._enter(fd, parts[depth], "/".join(parts[:depth + 1]))
                if own:
                    os.close(fd)
                fd, own = inner, True
        except BaseException:
            if own:
                os.close(fd)
            raise
        return fd

    def _enter(self, parent: int, name: str, folder: str) -> int:
        """Open the folder ``name`` in the open folder ``parent`` (``folder`` is its key),
        making it when missing; never through a symbolic link."""
        made = False
        try:
            try:
                return os.open(name, FOLDER_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                with contextlib.suppress(FileExistsError):     # (another worker's)
                    os.mkdir(name, self.folder_mode, dir_fd=parent)
                    made = True
                fd = os.open(name, FOLDER_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            try:        # (which of the two, only to say it)
                mode = os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode
            except OSError:
                mode = stat.S_IFLNK     # gone again: swapped, as a link would be
            if not (stat.S_ISLNK(mode) or stat.S_ISDIR(mode)):   # (a folder: swapped back)
                raise UnsafePathError(f"cannot write into {folder!r}: {name!r} there is not a "
                                      "folder; move it, or restore elsewhere") from None
            raise UnsafePathError(
                f"refusing to write into {folder!r}: {name!r} there is a symbolic link, "
                f"and a restore never follows one below its folder {self.root}; remove it, "
                "or restore elsewhere") from None
        if made and os.fstat(fd).st_uid != os.geteuid():
            os.close(fd)
            raise UnsafePathError(f"refusing to write into {folder!r}: the folder made there "
                                  "was swapped for another user's while the restore ran")
        return fd

    def _trim(self) -> None:
        """Close the folders opened longest ago, once more than FOLDER_FDS are open; only
        where no write can be using one (see the class)."""
        if len(self._fds) > FOLDER_FDS:
            for folder in list(self._fds)[:len(self._fds) - FOLDER_FDS // 2]:
                if folder:
                    os.close(self._fds.pop(folder))

    def store(self, folder: str, fill: Callable[[BinaryIO], R], key_of: Callable[[R], str],
              mtime: Optional[int] = None, mode: int = 0o600, expect: int = 0
              ) -> tuple[R, str]:
        """As LocalStorage.store(), every name relative to its folder's descriptor."""
        if self._pending is None:
            self._trim()
        at = self._open(folder)
        tmp = temp_prefix() + os.urandom(6).hex()     # (chosen first: see LocalStorage)
        self._unfinished_at.add((at, tmp))
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                         dir_fd=at)
            result = self._fill(fd, fill, mtime, mode, expect)
            key = key_of(result)
            head, _, name = key.rpartition("/")
            assert head == folder, (key, folder)
            if self._pending is not None:
                self._pending.append((at, tmp, name, key))
                return result, key
            os.replace(tmp, name, src_dir_fd=at, dst_dir_fd=at)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp, dir_fd=at)
            self._unfinished_at.discard((at, tmp))
            raise
        self._unfinished_at.discard((at, tmp))
        os.fsync(at)
        return result, key

    @contextlib.contextmanager
    def batch(self) -> Iterator[dict[str, BaseException]]:
        """As LocalStorage.batch(), through the folders' descriptors."""
        pending: list[tuple[int, str, str, str]] = []   # (folder, temporary name, name, key)
        self._pending = pending
        failed: dict[str, BaseException] = {}
        done = 0
        try:
            yield failed
            folders = {at for at, _, _, _ in pending}
            if not _syncfs_at(folders):
                for at, tmp, _, _ in pending:
                    fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=at)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            for at, tmp, name, key in pending:
                try:
                    os.replace(tmp, name, src_dir_fd=at, dst_dir_fd=at)
                except OSError as exc:
                    failed[key] = exc
                    with contextlib.suppress(OSError):
                        os.remove(tmp, dir_fd=at)
                self._unfinished_at.discard((at, tmp))
                done += 1       # only now: a stop before this line still removes tmp
            if not _syncfs_at(folders):
                for at in folders:
                    os.fsync(at)
            self._pending = None
            self._trim()
        except BaseException:
            for at, tmp, _, _ in pending[done:]:
                with contextlib.suppress(OSError):
                    os.remove(tmp, dir_fd=at)
                self._unfinished_at.discard((at, tmp))
            raise
        finally:
            self._pending = None

    def discard_unfinished(self) -> None:
        for at, tmp in list(self._unfinished_at):
            with contextlib.suppress(OSError):
                os.remove(tmp, dir_fd=at)
            self._unfinished_at.discard((at, tmp))


# ------------------ S3 requests: limits, error words, and the requests counted per process

S3_COPY_LIMIT = 5 * 1024 ** 3         # bytes; a single CopyObject copies at most 5 GB
S3_MULTIPART_THRESHOLD = 64 * 1024 ** 2  # bytes; larger uploads go in parts
S3_PART_SIZE = 8 * 1024 ** 2          # bytes per part, at least; larger for huge objects ...
S3_MAX_PARTS = 10_000                 # ... since S3 allows this many parts per upload
S3_DELETE_BATCH = 1000               # keys per DeleteObjects request (the S3 maximum)
S3_LIST_PAGE = 1000                  # keys per ListObjectsV2 page (the S3 maximum)
S3_LIST_THREADS = 8                  # folders listed at once when a listing is long ...
S3_LIST_AHEAD = 2                    # ... each with at most this many pages waiting
S3_LIST_POLL = 0.2                   # seconds; how often a folder's waiting thread looks
                                     # whether the listing was given up
S3_WIRE = True                       # GetObject and small PutObjects sent by S3Wire
S3_ARCHIVE_ERRORS = ("InvalidObjectState", "ObjectNotInActiveTierError")  # reading or
                                      # copying an archived object that is not thawed
S3_STALE_UPLOAD_SECONDS = 24 * 3600   # an unfinished multipart upload this old is a dead run's
                                      # (no live upload of ours takes a day to finish)
S3_ERROR_HINTS = {
    "InvalidAccessKeyId": "check aws_access_key_id",
    "SignatureDoesNotMatch": "check aws_secret_access_key (and signature_version)",
    "AccessDenied": "the key pair may not use this bucket; check its permissions",
    "AllAccessDisabled": "the key pair may not use this bucket; check its permissions",
    "NoSuchBucket": "check s3_bucket",
    "403": "the key pair may not use this bucket; check the keys and permissions",
}


class _Window:
    """``length`` bytes of a seekable file from ``start``, as a file of their own: a part's
    body is sent (and, on a retry, re-sent) from the spool file, never copied to memory."""

    def __init__(self, file: BinaryIO, start: int, length: int):
        self.file, self.start, self.length, self.pos = file, start, length, 0

    def __len__(self) -> int:
        return self.length - self.pos

    def read(self, size: int = -1) -> bytes:
        left = self.length - self.pos
        size = left if size is None or size < 0 else min(size, left)
        self.file.seek(self.start + self.pos)
        data = self.file.read(size)
        self.pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.length}[whence]
        self.pos = max(0, min(self.length, base + offset))
        return self.pos

    def tell(self) -> int:
        return self.pos


def s3_error_code(exc: BaseException) -> str:
    """The S3 error code of a botocore ClientError; "" for anything else (botocore's
    connection errors carry ``response = None``)."""
    response = getattr(exc, "response", None)
    return (response.get("Error") or {}).get("Code", "") if isinstance(response, dict) else ""


def s3_part_size(size: int) -> int:
    """Bytes per part for a multipart upload of ``size`` bytes: S3_PART_SIZE, or more when
    S3_MAX_PARTS parts of it would not hold the object."""
    return max(S3_PART_SIZE, -(-size // S3_MAX_PARTS))


@lru_cache(maxsize=1)
def s3_failures() -> tuple[type[BaseException], ...]:
    """The exceptions boto3 raises for a failed request (network, service), as opposed to
    a mistake in how it was called (ParamValidationError, which is a bug)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError
    return BotoCoreError, ClientError, Boto3Error


@contextlib.contextmanager
def s3_requests(missing: str = "") -> Iterator[None]:
    """Turn boto3's request failures into ours: TransferError, or MissingError for a key
    that is not there when ``missing`` names it."""
    from botocore.exceptions import ParamValidationError
    try:
        yield
    except ParamValidationError:
        raise
    except s3_failures() as exc:
        code = s3_error_code(exc)
        if missing and code in ("NoSuchKey", "404"):
            raise MissingError(f"{missing} no longer exists") from None
        if code in S3_ARCHIVE_ERRORS:
            raise TransferError(f"S3 error {code}: the object is in an archive storage class "
                                "and not thawed (--restore and --verify ask for thaws)"
                                ) from None
        raise TransferError(f"S3 error {code}" if code else f"{type(exc).__name__}: {exc}"
                            ) from None


# Requests made in this process, by kind, and HTTP attempts (a retry is one more attempt).
S3_REQUEST_KINDS = {
    "ListObjectsV2": "LIST", "ListMultipartUploads": "LIST", "ListObjectVersions": "LIST",
    "GetObject": "GET",
    "HeadObject": "HEAD", "HeadBucket": "HEAD", "PutObject": "PUT", "UploadPart": "PUT",
    "CreateMultipartUpload": "PUT", "CompleteMultipartUpload": "PUT", "CreateBucket": "PUT",
    "CopyObject": "COPY", "UploadPartCopy": "COPY", "DeleteObject": "DELETE",
    "DeleteObjects": "DELETE", "AbortMultipartUpload": "DELETE", "RestoreObject": "RESTORE",
    "GetBucketVersioning": "CONFIG", "GetObjectLockConfiguration": "CONFIG",   # the bucket's
    "GetBucketLifecycleConfiguration": "CONFIG", "PutObjectRetention": "RETAIN"}   # settings
_REQUESTS: dict[str, int] = {}
_REQUESTS_LOCK = threading.Lock()
EXPECT_CONTINUE_MIN = 1024 * 1024   # bytes; a smaller body is sent without waiting for
                                    # "100 Continue", which costs a round trip


_UNCOUNTED = threading.local()     # .on: this thread's requests are not counted


def _count_request(kind: str) -> None:
    if getattr(_UNCOUNTED, "on", False):
        return
    with _REQUESTS_LOCK:
        _REQUESTS[kind] = _REQUESTS.get(kind, 0) + 1


class _WireHandover:
    """What the wire got for a request it hands to boto3, given to boto3 as its first
    attempt of that request instead of sending it again: an answer (status, headers, body)
    or a broken connection.  One per thread, for the next request boto3 creates in that
    thread; _s3_attempt takes it when that request is the same (method and path), and
    _s3_handed_over answers boto3's first attempt with it (botocore's before-send event:
    a handler's answer is the attempt's, a botocore HTTP error raised there is the
    attempt's failure).  boto3 then parses, retries and backs off as after any attempt."""

    mine = threading.local()            # .handover: this thread's, until boto3 takes it

    def __init__(self, method: str, path: str, status: int = 0,
                 headers: Optional[dict[str, str]] = None, body: bytes = b"",
                 url: str = ""):
        self.method, self.path, self.status = method, path, status
        self.headers, self.body, self.url = headers or {}, body, url
        self.taken = False              # boto3's next attempt is this one's

    def give(self) -> None:
        _WireHandover.mine.handover = self

    @staticmethod
    def drop() -> None:
        _WireHandover.mine.handover = None

    @staticmethod
    def take(request: Any) -> bool:
        """Whether ``request``, just created by boto3, is the one handed over (then its
        first attempt is answered here); any other request drops the handover."""
        handover = getattr(_WireHandover.mine, "handover", None)
        if handover is None:
            return False
        import urllib.parse
        if (not handover.taken and request.method == handover.method
                and urllib.parse.urlsplit(request.url).path == handover.path):
            handover.taken = True
            return True
        _WireHandover.drop()
        return False

    def answer(self) -> Any:
        """The attempt's answer as botocore's, or its failure raised as botocore's."""
        from botocore.awsrequest import AWSResponse
        from botocore.exceptions import ConnectionClosedError
        if not self.status:
            raise ConnectionClosedError(endpoint_url=self.url)
        return AWSResponse(self.url, self.status, self.headers, _Answered(self.body))


class _Answered:
    """A body already read, as botocore reads a raw answer."""

    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def _s3_handed_over(request: Any, **kwargs: Any) -> Any:
    """botocore's before-send: the wire's answer to the attempt _s3_attempt marked."""
    handover = getattr(_WireHandover.mine, "handover", None)
    if handover is None or not handover.taken:
        return None
    _WireHandover.drop()
    return handover.answer()


def _s3_before_call(model: Any, params: dict, **kwargs: Any) -> None:
    """Count the call; send a small body at once (botocore asks every PUT body to wait for
    "100 Continue": worth a round trip only when the body is large)."""
    _count_request(S3_REQUEST_KINDS.get(model.name, model.name))
    headers = params.get("headers", {})
    if headers.get("Expect") == "100-continue":
        from botocore.utils import determine_content_length
        length = determine_content_length(params.get("body"))
        if length is not None and length < EXPECT_CONTINUE_MIN:
            del headers["Expect"]


def _s3_attempt(request: Any, **kwargs: Any) -> None:
    """Count an attempt, unless it is the wire's, handed over (counted by the wire)."""
    if not _WireHandover.take(request):
        _count_request("attempts")


def _s3_content_md5(request: Any, **kwargs: Any) -> None:
    """A Content-MD5 header on every request that writes an object or sends data
    (PutObject, UploadPart, DeleteObjects, CopyObject with its empty body): the service
    checks the body it got against it.  So an upload whose process dies after its headers
    went out stores nothing, even on a service that would otherwise keep the body it got
    so far (SeaweedFS stores an empty object); some S3-compatible services ask for it on
    DeleteObjects; and a bucket with Object Lock wants it on every write (AWS answers
    MissingUploadObjectWithObjectLockHeaders without it)."""
    body = b"" if request.body is None else request.body
    if "Content-MD5" in request.headers:
        return
    digest = hashlib.md5()
    if isinstance(body, (bytes, bytearray)):
        digest.update(body)
    elif hasattr(body, "read") and hasattr(body, "seek"):
        start = body.tell()
        for chunk in iter(functools.partial(body.read, CHUNK), b""):
            digest.update(chunk)
        body.seek(start)
    else:
        return
    request.headers["Content-MD5"] = content_md5(digest)


def content_md5(digest: Any) -> str:
    """The Content-MD5 header's value for an MD5 ``digest`` of the body (base64)."""
    import base64
    return base64.b64encode(digest.digest()).decode("ascii")


def merge_requests(counts: dict[str, int]) -> None:
    """Add the requests another process made (its take_requests()) to this one's."""
    with _REQUESTS_LOCK:
        for kind, count in counts.items():
            _REQUESTS[kind] = _REQUESTS.get(kind, 0) + count


def take_requests() -> dict[str, int]:
    """The requests this process made since the last call, by kind (and "attempts")."""
    with _REQUESTS_LOCK:
        taken = dict(_REQUESTS)
        _REQUESTS.clear()
    return taken


class _S3Body(Closing):
    """A GetObject body whose read errors are ours (TransferError), as for every request."""

    def __init__(self, body: Any):
        self._body = body

    def read(self, size: int = -1) -> bytes:
        with s3_requests():
            return self._body.read(size if size is not None and size >= 0 else None)

    def close(self) -> None:
        self._body.close()


# --------------------------- S3 wire: GetObject and small PutObjects, signed and sent here

WIRE_BODY_MAX = EXPECT_CONTINUE_MIN   # bytes: an upload this large is boto3's (100-continue)
WIRE_RETRY_STATUS = frozenset({404, 408, 429, 500, 502, 503, 504})   # boto3's to handle,
                                      # the wire still on; any other failure turns it off
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class _WireFailed(Exception):
    """A request the wire could not complete: boto3 makes it again."""


class S3Wire:
    """PutObject and GetObject sent from here over kept-alive HTTP/1.1 connections, signed
    with AWS Signature Version 4: the requests boto3 would send, for a fraction of its CPU
    (boto3 spends about 1 ms of CPU a request on its hooks, serialising and parsing, which
    bounds a run over a far-away link at a few hundred requests a second).

    The wire does the plain case only.  A request it cannot complete, or whose answer is
    not a success, goes to boto3, which retries, follows redirects and words the error.
    What the wire got (an answer S3 may give to any request: a 404, a throttle, a server
    error; or a broken connection) is handed over as boto3's first attempt of that
    request (see _WireHandover): boto3 words a failed GET from that answer, and backs off
    before its next attempt as after any of its own, within its one retry budget; so a
    throttled bucket gets no more requests than from boto3 alone.  An answer it does not
    expect (a redirect, a refusal) turns the wire off for this process and boto3 sends the
    request itself.  It is made (s3_wire) only where boto3 would send the same request
    straight: Signature Version 4, no proxy, URL and signing region as boto3 computed them."""

    def __init__(self, url: str, region: str, credentials: Any, timeouts: tuple[float, float],
                 cafile: Optional[str] = None):
        import urllib.parse
        parts = urllib.parse.urlsplit(url)
        self.https, self.host, self.base = parts.scheme == "https", parts.netloc, parts.path
        self.region, self.credentials = region, credentials
        self.connect_timeout, self.read_timeout = timeouts
        self.cafile = cafile
        self.on = True
        self._idle: list[Any] = []          # kept-alive connections, last used first
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, str], bytes] = {}   # (day, secret key): signing key
        self._ssl: Any = None

    # -------------------------------------------------------------- signing

    def path(self, key: str) -> str:
        """The request's path for a full key: S3 encodes it once, keeping "/" and "~"."""
        import urllib.parse
        return self.base + urllib.parse.quote(key, safe="/~")

    def _signing_key(self, secret: str, day: str) -> bytes:
        import hmac
        key = self._keys.get((day, secret))
        if key is None:
            key = ("AWS4" + secret).encode()
            for part in (day, self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {(day, secret): key}
        return key

    def signed(self, method: str, path: str, payload_hash: str, headers: dict[str, str],
               now: Optional[float] = None) -> dict[str, str]:
        """``headers`` (lower-case names) with host, date, payload hash and authorisation
        added: Signature Version 4 over every one of them."""
        import hmac
        frozen = self.credentials.get_frozen_credentials()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        headers = {"host": self.host, "x-amz-content-sha256": payload_hash,
                   "x-amz-date": stamp, **headers}
        if frozen.token:
            headers["x-amz-security-token"] = frozen.token
        names = sorted(headers)
        canonical = "\n".join([method, path, "", *(f"{n}:{headers[n]}" for n in names), "",
                               ";".join(names), payload_hash])
        scope = f"{stamp[:8]}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        signature = hmac.new(self._signing_key(frozen.secret_key, stamp[:8]),
                             to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={frozen.access_key}/{scope}, "
                                    f"SignedHeaders={';'.join(names)}, Signature={signature}")
        return headers

    # -------------------------------------------------------------- connections

    def _connection(self) -> tuple[Any, bool]:
        """A kept-alive connection (True) or a new one (False)."""
        import http.client
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        if not self.https:
            return http.client.HTTPConnection(self.host, timeout=self.connect_timeout), False
        if self._ssl is None:
            import ssl
            self._ssl = ssl.create_default_context(cafile=self.cafile)
        return http.client.HTTPSConnection(self.host, timeout=self.connect_timeout,
                                           context=self._ssl), False

    def _keep(self, connection: Any, response: Any) -> None:
        if response.will_close:
            connection.close()
        else:
            with self._lock:
                self._idle.append(connection)

    def url(self, path: str) -> str:
        return f"{'https' if self.https else 'http'}://{self.host}{path}"

    def _send(self, method: str, key: str, body: Optional[bytes], headers: dict[str, str]
              ) -> tuple[Any, Any, str]:
        """(connection, response, path) once the answer's status and headers are in.  A
        kept-alive connection the server has closed meanwhile is replaced once; any other
        failure is _WireFailed, a broken connection handed over to boto3 as its first
        attempt (every step of the request is in here: a key that cannot be a path, failed
        credentials, a CA file that cannot be read, hand the request to boto3)."""
        import http.client
        import ssl
        _WireHandover.drop()
        path = ""
        while True:
            connection, kept = None, False
            try:
                payload = "UNSIGNED-PAYLOAD" if self.https else (
                    hashlib.sha256(body).hexdigest() if body else _EMPTY_SHA256)
                path = self.path(key)
                signed = self.signed(method, path, payload, headers)
                connection, kept = self._connection()
                _count_request("attempts")
                connection.request(method, path, body, signed)
                connection.sock.settimeout(self.read_timeout)
                return connection, connection.getresponse(), path
            except Exception as exc:    # noqa: BLE001 - whatever it is, boto3 tries instead
                if connection is not None:
                    connection.close()
                if isinstance(exc, ssl.SSLCertVerificationError):   # boto3 may trust it
                    self.turn_off(type(exc).__name__)
                elif kept and isinstance(exc, (http.client.RemoteDisconnected,
                                               ConnectionResetError, BrokenPipeError)):
                    continue
                elif connection is not None and isinstance(
                        exc, (OSError, http.client.HTTPException)):   # sent, or on its way
                    _WireHandover(method, path, url=self.url(path)).give()
                raise _WireFailed(exc) from None

    def _answered(self, connection: Any, response: Any, kind: str, path: str) -> bool:
        """Whether the answer is a success.  A failure's body is read (the connection stays
        usable); an answer S3 may give any request (WIRE_RETRY_STATUS) is handed over to
        boto3 as its first attempt, any other turns the wire off."""
        import http.client
        if 200 <= response.status < 300:
            _count_request(kind)
            return True
        try:
            body = response.read()
            self._keep(connection, response)
        except (OSError, http.client.HTTPException):
            connection.close()
            body = None
        if response.status not in WIRE_RETRY_STATUS:
            self.turn_off(f"answered {response.status}")
        elif body is None:
            _WireHandover(kind, path, url=self.url(path)).give()
        else:
            _WireHandover(kind, path, response.status, dict(response.getheaders()), body,
                          self.url(path)).give()
        return False

    def turn_off(self, why: str) -> None:
        self.on = False
        log.debug("S3 requests: %s %s; boto3 makes them from now on", self.host, why)

    # -------------------------------------------------------------- requests

    def put(self, key: str, data: bytes, headers: dict[str, str]) -> bool:
        """PutObject of ``data`` (with Content-MD5); False: not done, boto3's turn."""
        import http.client
        headers = {**headers, "content-md5": content_md5(hashlib.md5(data))}
        try:
            connection, response, path = self._send("PUT", key, data, headers)
        except _WireFailed:
            return False
        if not self._answered(connection, response, "PUT", path):
            return False
        try:
            response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            return True       # the status is in: the object is stored
        self._keep(connection, response)
        return True

    def get(self, key: str) -> Optional["_WireBody"]:
        """GetObject: its body as a stream, or None: not done, boto3's turn."""
        try:
            connection, response, path = self._send("GET", key, None, {})
        except _WireFailed:
            return None
        if not self._answered(connection, response, "GET", path):
            return None
        return _WireBody(self, connection, response)


class _WireBody(Closing):
    """A GetObject body from S3Wire: read errors, and a body shorter than its
    Content-Length, are TransferErrors; the connection is kept once the body is read."""

    def __init__(self, wire: S3Wire, connection: Any, response: Any):
        self.wire, self.connection, self.response = wire, connection, response
        length = response.getheader("Content-Length")
        self.left = int(length) if length and length.isdigit() else None

    def read(self, size: int = -1) -> bytes:
        import http.client
        whole = size is None or size < 0
        try:
            data = self.response.read(None if whole else size)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise TransferError(f"S3 read failed: {type(exc).__name__}") from None
        if self.left is not None:
            self.left -= len(data)
            if self.left < 0 or (self.left > 0 and (whole or (size and not data))):
                self.close()
                raise TransferError("S3 read failed: the connection ended early")
        return data

    def close(self) -> None:
        if self.connection is None:
            return
        connection, self.connection = self.connection, None
        if self.left == 0 and self.response.isclosed():
            self.wire._keep(connection, self.response)
        else:
            connection.close()


def s3_wire(session: Any, client: Any, bucket: str, ca_bundle: Optional[str]
            ) -> Optional[S3Wire]:
    """An S3Wire for ``client``'s bucket, or None where boto3 would not send a request
    straight (a signature other than Version 4, a proxy, no credentials).  boto3 computes
    the URL and the signing region: a HeadObject is started and stopped before it is
    signed (the endpoint rules of S3 are many: regions, virtual hosts, custom endpoints)."""
    import urllib.parse
    import urllib.request

    class Stop(Exception):
        pass

    seen: dict[str, Any] = {}
    me = threading.get_ident()

    def stop(request: Any, **kwargs: Any) -> None:
        if threading.get_ident() != me:         # another thread's real HeadObject
            return
        signing = (getattr(request, "context", None) or {}).get("signing") or {}
        seen.update(kwargs, url=request.url, region=signing.get("region") or
                    kwargs.get("region_name"))    # (after a redirect: the bucket's region)
        raise Stop

    probe = "esb-probe"
    client.meta.events.register("before-sign.s3.HeadObject", stop, unique_id="esb-wire")
    _UNCOUNTED.on = True            # (never sent)
    try:
        client.head_object(Bucket=bucket, Key=probe)
    except Stop:
        pass
    except Exception as exc:          # noqa: BLE001 - any reason: boto3 alone, as before
        log.debug("S3 requests: boto3 only (%s)", exc)
        return None
    finally:
        _UNCOUNTED.on = False
        client.meta.events.unregister("before-sign.s3.HeadObject", unique_id="esb-wire")
    url, credentials = seen.get("url", ""), session.get_credentials()
    parts = urllib.parse.urlsplit(url)
    if (seen.get("signature_version") != "s3v4" or credentials is None
            or not parts.path.endswith("/" + probe) or parts.query
            or parts.scheme not in ("http", "https")
            or (urllib.request.getproxies().get(parts.scheme)
                and not urllib.request.proxy_bypass(parts.hostname or ""))):
        return None
    base = urllib.parse.urlunsplit(parts._replace(path=parts.path[:-len(probe)]))
    try:        # botocore's own parts, as in the versions requirements.txt allows
        from botocore.httpsession import get_cert_path
        config = client.meta.config
        # the CA bundle boto3 verifies with: ca_bundle (AWS_CA_BUNDLE), else
        # REQUESTS_CA_BUNDLE (botocore honours it too), else certifi's
        cafile = ca_bundle or os.environ.get("REQUESTS_CA_BUNDLE") or get_cert_path(True)
        timeouts = (float(config.connect_timeout), float(config.read_timeout))
    except Exception as exc:          # noqa: BLE001 - another botocore: boto3 alone
        log.debug("S3 requests: boto3 only (%s: %s)", type(exc).__name__, exc)
        return None
    return S3Wire(base, seen.get("region") or "us-east-1", credentials, timeouts, cafile)


# --------------------------- S3 storage: S3Storage (boto3, and the wire), and make_storage

_S3_CLIENT_LOCK = threading.Lock()   # one client per process, made by the first thread


def _new_client_lock() -> None:
    """In a forked child: a lock of its own (another thread may have held the parent's)."""
    global _S3_CLIENT_LOCK
    _S3_CLIENT_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_new_client_lock)


PROBE_KEY = ".esb-probe"   # under the destination's prefix: --check-protection's own object
                           # (no backup suffix, so listings pass it by); one fixed key, so
                           # that a probe version kept by a retention is tried again, not
                           # joined by a new one on every check
UNKNOWN = "unknown (these keys may not read it)"
LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")
NO_LOCK_ERRORS = ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration",
                  "InvalidRequest")      # GetObjectLockConfiguration of a bucket without it


@dataclass(frozen=True)
class Protection:
    """What protects an S3 destination from keys that can write to it; None in a field:
    these keys were refused reading it."""
    versioning: Optional[str]      # "Enabled", "Suspended", or "" (never turned on)
    lock: Optional[str]            # Object Lock default mode ("GOVERNANCE", "COMPLIANCE"),
                                   # "Enabled" (lock on, no default retention), or "" (off)
    retention: str = ""            # the default retention, e.g. "30 days", when a mode is set
    expiry: Optional[int] = 0      # days a lifecycle rule keeps non-current versions; 0: none
    destroyable: Optional[bool] = None   # the probe: these keys can delete a version
    why: str = "not probed"        # ... because
    kept: str = ""                 # where a probe version stayed (kept by the retention)

    def safe(self) -> bool:
        """Versions kept, and these keys cannot destroy them (or, unprobed, a retention
        keeps them)."""
        return self.versioning == "Enabled" and (
            self.destroyable is False or (self.destroyable is None and self.lock in LOCK_MODES))

    def lines(self) -> list[str]:
        """One line per fact, for --check-protection and the start of a backup."""
        def known(value: Optional[str], shown: str) -> str:
            return UNKNOWN if value is None else shown
        lock = known(self.lock, f"{self.lock}, default retention {self.retention}"
                     if self.lock in LOCK_MODES else "on, no default retention"
                     if self.lock else "off")
        expiry = UNKNOWN if self.expiry is None else (
            f"after {self.expiry} days" if self.expiry else "never (no lifecycle rule does)")
        verdict = "unknown" if self.destroyable is None else (
            "yes" if self.destroyable else "no")
        return [f"versioning: {known(self.versioning, (self.versioning or 'off').lower())}",
                f"Object Lock: {lock}",
                f"non-current versions expire: {expiry}",
                f"an attacker with these keys could destroy the backup: {verdict}, because "
                f"{self.why}"]

    def summary(self) -> str:
        """The line at the start of a backup (no probe there)."""
        return ", ".join(self.lines()[:2]) + " (--check-protection tells more)"

    def gauges(self) -> dict[str, int]:
        """The metrics samples (see METRICS); a part not known is left out."""
        found = {}
        if self.versioning is not None:
            found["destination_versioning"] = int(self.versioning == "Enabled")
        if self.lock is not None:
            found["destination_object_lock"] = int(self.lock in LOCK_MODES)
        return found


def noncurrent_expiry(rules: Iterable[dict], prefix: str) -> int:
    """The fewest days an enabled lifecycle rule that covers every key under ``prefix``
    keeps non-current versions; 0 when none expires them."""
    found = []
    for rule in rules:
        days = (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
        where = rule.get("Filter", {})
        if "And" in where:
            where = where["And"] if not where["And"].get("Tags") else {"Tag": True}
        covers = "Tag" not in where and "ObjectSizeGreaterThan" not in where \
            and "ObjectSizeLessThan" not in where and prefix.startswith(
                where.get("Prefix", rule.get("Prefix", "")))
        if rule.get("Status") == "Enabled" and days and covers:
            found.append(int(days))
    return min(found, default=0)


class S3Storage:
    """A bucket and optional base_path; one boto3 client per process, made on first use."""

    remote: ClassVar[bool] = True
    ordered: ClassVar[bool] = True     # S3 lists in UTF-8 byte order; not every S3-compatible
                                       # service does (SeaweedFS: folder by folder)

    def __init__(self, config: StorageConfig, requests: int = 0,
                 throttle: Optional[Throttle] = None, lock: Optional[ObjectLock] = None):
        self.config = config
        self.requests = requests       # requests this process may have in flight at once
        self.throttle = throttle
        self.lock = lock               # the retention of every object written, or None
        assert config.s3_bucket, "an S3 storage is made for a section with s3_bucket"
        self.bucket: str = config.s3_bucket
        base = (config.base_path or "").strip("/")
        self.prefix = base + "/" if base else ""
        self._client: Any = None
        self._wire: Optional[S3Wire] = None
        self._made: Any = None          # (session, CA bundle) the client was made from
        self._pid = self._wire_pid = 0
        self._lock_answer: Any = None    # GetObjectLockConfiguration's, once asked
        self._versioning_answer: Any = None    # GetBucketVersioning's Status, once asked

    def __str__(self) -> str:
        where = f" at {self.config.endpoint_url}" if self.config.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        # a client never crosses processes, nor what goes with it
        state.update(_client=None, _wire=None, _made=None, _pid=0, _wire_pid=0,
                     _lock_answer=None, _versioning_answer=None)
        return state

    @property
    def client(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            with _S3_CLIENT_LOCK:
                if self._client is None or self._pid != os.getpid():
                    self._client, self._made = self._new_client()
                    self._pid = os.getpid()
        return self._client

    @property
    def wire(self) -> Optional[S3Wire]:
        """This process's S3Wire while it is on; made on first use (a process that only
        lists, as the listing helper does, never pays for making it)."""
        client = self.client
        if self._wire_pid != self._pid:
            with _S3_CLIENT_LOCK:
                if self._wire_pid != self._pid:
                    self._wire = s3_wire(self._made[0], client, self.bucket,
                                         self._made[1]) if S3_WIRE else None
                    self._wire_pid = self._pid
        wire = self._wire
        return wire if wire is not None and wire.on else None

    def _new_client(self) -> tuple[Any, tuple[Any, Optional[str]]]:
        import boto3
        import botocore.session
        from botocore.config import Config
        c = self.config
        options: dict[str, Any] = dict(
            retries={"mode": "standard", "max_attempts": 10},
            parameter_validation=False,   # our own calls; saves CPU on every request
            connect_timeout=20, read_timeout=120,
            # One connection for every request that may be in flight (botocore keeps 10).
            max_pool_connections=max(10, self.requests),
            # S3-compatible services (Backblaze, R2, older MinIO/Ceph) reject the newer
            # default CRC checksum headers; AWS works either way.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required")
        if c.signature_version:
            options["signature_version"] = c.signature_version
        core = botocore.session.get_session()
        session = boto3.session.Session(
            aws_access_key_id=c.aws_access_key_id, aws_secret_access_key=c.aws_secret_access_key,
            region_name=c.region_name, botocore_session=core)
        client = session.client("s3", endpoint_url=c.endpoint_url, config=Config(**options))
        client.meta.events.register("before-call.s3", _s3_before_call)
        client.meta.events.register("request-created.s3", _s3_attempt)
        client.meta.events.register("before-send.s3", _s3_handed_over)
        for operation in ("PutObject", "UploadPart", "DeleteObjects", "CopyObject",
                          "PutObjectRetention"):
            client.meta.events.register(f"before-sign.s3.{operation}", _s3_content_md5)
        return client, (session, core.get_config_variable("ca_bundle"))

    def _key(self, key: str) -> str:
        """The object key of ``key`` in the bucket.  UnusableNameError when it cannot be one:
        an S3 key is UTF-8, and a local file name need not be (Python hands its bytes over
        as surrogates), so such a file fails alone instead of the whole run."""
        full = self.prefix + key
        if not full.isascii():
            try:
                full.encode("utf-8")
            except UnicodeEncodeError:
                shown = key.encode("utf-8", "backslashreplace").decode("utf-8")
                raise UnusableNameError(
                    f"its name is not UTF-8 ({shown}), and an S3 key must be: turn "
                    "encrypt_filenames on (an encrypted name holds any name), or rename the "
                    "file (a restore of it needs a local folder)") from None
        return full

    def error(self, exc: Exception, doing: str) -> BackupError:
        """A one-line StorageError for a boto3/botocore exception."""
        code = s3_error_code(exc)
        hint = S3_ERROR_HINTS.get(code, "")
        detail = f"{code}" if code else type(exc).__name__
        if not code:
            detail += f" ({exc})"
        return StorageError(f"{doing} {self}: {detail}" + (f"; {hint}" if hint else ""))

    def prepare(self, create: bool, missing_ok: bool = False) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except ClientError as exc:
            code = s3_error_code(exc)
            if code in ("404", "NoSuchBucket") and missing_ok:
                return False
            if code in ("404", "NoSuchBucket") and not create:
                raise StorageError(f"bucket {self.bucket} does not exist ({self}); check "
                                   "s3_bucket") from None
            if code not in ("404", "NoSuchBucket"):
                raise self._explain(exc) from None
        except BotoCoreError as exc:
            raise self.error(exc, "cannot reach") from None
        try:
            args: dict[str, Any] = {"Bucket": self.bucket}
            region = self.config.region_name
            if region and region != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": region}
            if self.lock:                  # (which turns versioning on too)
                args["ObjectLockEnabledForBucket"] = True
            self.client.create_bucket(**args)
        except ClientError as exc:
            if s3_error_code(exc) != "BucketAlreadyOwnedByYou":
                raise self.error(exc, "cannot create bucket") from None
        except BotoCoreError as exc:
            raise self.error(exc, "cannot reach") from None
        return True

    def _explain(self, exc: Exception) -> BackupError:
        """HEAD answers carry no error code: ask again with a GET to learn why."""
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except (ClientError, BotoCoreError) as detailed:
            exc = detailed
        return self.error(exc, "cannot open bucket")

    def _lock_configuration(self, **_: Any) -> dict:
        """GetObjectLockConfiguration's answer (or its error), asked once per storage: a
        backup's start reads it for its lock settings and for its protection line."""
        if self._lock_answer is None:
            try:
                self._lock_answer = self.client.get_object_lock_configuration(
                    Bucket=self.bucket)
            except Exception as exc:       # noqa: BLE001 - kept, raised to every caller
                self._lock_answer = exc
        if isinstance(self._lock_answer, Exception):
            raise self._lock_answer
        return self._lock_answer

    def object_lock_rule(self) -> tuple[bool, Optional[ObjectLock]]:
        """GetObjectLockConfiguration (asked once): whether the bucket has Object Lock, and
        its default retention (None: none).  A bucket without it answers an error
        (NO_LOCK_ERRORS), which is (False, None); any other error is raised."""
        from botocore.exceptions import ClientError
        try:
            answer = self._lock_configuration()
        except ClientError as exc:
            if s3_error_code(exc) in NO_LOCK_ERRORS:
                return False, None
            raise
        found = answer.get("ObjectLockConfiguration", {})
        rule = found.get("Rule", {}).get("DefaultRetention", {})
        days = rule.get("Days") or 365 * (rule.get("Years") or 0)
        default = ObjectLock(rule["Mode"], days) if rule.get("Mode") and days else None
        return found.get("ObjectLockEnabled") == "Enabled", default

    def lock_notes(self) -> list[str]:
        """With object_lock settings: a StorageError unless the bucket has Object Lock
        (S3 refuses a locked write to any other).  Without: a note when the bucket's own
        default retention locks what is written (a bucket that cannot say is no matter)."""
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            enabled, default = self.object_lock_rule()
        except (ClientError, BotoCoreError) as exc:
            if not self.lock:
                return []
            raise self.error(exc, "cannot read the Object Lock configuration of") from None
        if self.lock and not enabled:
            raise StorageError(
                f"bucket {self.bucket} has no Object Lock, so object_lock_mode and "
                "object_lock_days cannot apply; use a bucket made with Object Lock (aws s3api "
                "create-bucket --object-lock-enabled-for-bucket), or unset both settings")
        if not self.lock and default:
            return [f"the bucket's default retention applies: each object written is locked "
                    f"{default.mode} for {default.days} days (Object Lock), and "
                    + default.extension()]
        return []

    def kept_lock(self) -> Optional[ObjectLock]:
        if self.lock:
            return self.lock
        from botocore.exceptions import BotoCoreError, ClientError
        try:                              # (read by lock_notes already: no request here)
            return self.object_lock_rule()[1]
        except (ClientError, BotoCoreError):
            return None

    def extend_lock(self, key: str, until: int) -> bool:
        """HeadObject, and PutObjectRetention unless an earlier run did it already: the
        object stays locked until ``until`` (epoch seconds), in this storage's mode (none
        set: the bucket's default retention's, which the object holds), never weaker than
        the mode it holds.  Whether it was extended now."""
        with s3_requests(missing=key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            held = head.get("ObjectLockRetainUntilDate")
            if held is not None and held.timestamp() >= until:
                return False
            mode = head.get("ObjectLockMode") or "GOVERNANCE"
            if self.lock and mode != "COMPLIANCE":
                mode = self.lock.mode
            self.client.put_object_retention(
                Bucket=self.bucket, Key=self._key(key), Retention={
                    "Mode": mode, "RetainUntilDate": datetime.datetime.fromtimestamp(
                        until, datetime.timezone.utc)})
        return True

    def housekeeping(self) -> list[str]:
        """Abort the multipart uploads a killed run left (invisible, but billed)."""
        if self.abort_stale_uploads():
            return ["aborted unfinished uploads left by an interrupted run"]
        return []

    def abort_stale_uploads(self, older_than: float = S3_STALE_UPLOAD_SECONDS) -> int:
        """Abort multipart uploads under our prefix started long enough ago that no live run
        still owns them; how many."""
        cutoff = time.time() - older_than
        aborted = 0
        with s3_requests():
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for upload in page.get("Uploads", ()):
                    if upload["Initiated"].timestamp() < cutoff:
                        self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                        aborted += 1
        return aborted

    def list_files(self, report: ListReport,
                   skip: Optional[Callable[[str], bool]] = None) -> Iterator[Entry]:
        """In the order the service lists keys (S3: UTF-8 byte order).  A listing longer
        than one page is split by the top-level folders, listed side by side: over a long
        link a million objects are otherwise a thousand pages, each waiting for the one
        before."""
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            first = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix,
                                                MaxKeys=S3_LIST_PAGE)
            if first.get("IsTruncated"):
                listed = self._list_split()
            else:
                listed = iter(first.get("Contents", ()))
            for item in listed:
                key = item["Key"][len(self.prefix):]
                if key and not key.endswith("/") and not (skip and skip(key)):
                    yield Entry(key, item["Size"], int(item["LastModified"].timestamp()),
                                other_class(item.get("StorageClass")))
        except (BotoCoreError, ClientError) as exc:
            raise self.error(exc, "cannot list") from None

    def _pages(self, prefix: str, delimiter: str = "", versions: bool = False
                ) -> Iterator[dict]:
        """The pages of ListObjectsV2 (``versions``: ListObjectVersions) under ``prefix``,
        each asked for when it is needed."""
        args = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": S3_LIST_PAGE}
        if delimiter:
            args["Delimiter"] = delimiter
        operation = "list_object_versions" if versions else "list_objects_v2"
        return iter(self.client.get_paginator(operation).paginate(**args))

    def _list_split(self, versions: bool = False) -> Iterator[dict]:
        """The top level, a page at a time, with "/" as delimiter; each folder it names
        listed in a thread (S3_LIST_THREADS at once, in order), which keeps at most
        S3_LIST_AHEAD of its pages waiting; merged back in the order S3 lists keys.
        ``versions``: the versions and delete markers (page_items), a key's newest first."""
        from concurrent.futures import ThreadPoolExecutor
        stop = threading.Event()
        threads = ThreadPoolExecutor(S3_LIST_THREADS)
        try:
            for page in self._pages(self.prefix, "/", versions):
                folders: dict[str, queue.Queue] = {item["Prefix"]: queue.Queue(S3_LIST_AHEAD)
                           for item in page.get("CommonPrefixes", ())}
                listing = {folder: threads.submit(self._list_folder, folder, pages, stop,
                                                  versions)
                           for folder, pages in folders.items()}
                for key, item in heapq.merge(
                        ((item["Key"], item) for item in page_items(page, versions)),
                        ((folder, None) for folder in folders), key=lambda each: each[0]):
                    if item is not None:
                        yield item
                        continue
                    for contents in iter(folders[key].get, None):
                        yield from contents
                    listing[key].result()        # its error, if it had one
        finally:
            stop.set()          # (a thread in the middle of a request ends after it)
            threads.shutdown(wait=False, cancel_futures=True)

    def _list_folder(self, folder: str, pages: queue.Queue, stop: threading.Event,
                     versions: bool = False) -> None:
        """In a thread of _list_split: the objects of ``folder`` into ``pages``, a page's
        at a time, then None (also after an error, which the thread's future holds);
        waits while ``pages`` is full, and gives up when ``stop`` is set."""
        def put(item: Optional[list]) -> bool:
            while not stop.is_set():
                with contextlib.suppress(queue.Full):
                    pages.put(item, timeout=S3_LIST_POLL)
                    return True
            return False

        try:
            for page in self._pages(folder, versions=versions):
                if not put(page_items(page, versions)):
                    return
        finally:
            put(None)

    def inside(self, other: Storage) -> Optional[str]:
        if not (isinstance(other, S3Storage) and other.bucket == self.bucket
                and other.config.endpoint_url == self.config.endpoint_url
                and other.prefix.startswith(self.prefix)):
            return None
        return other.prefix[len(self.prefix):].rstrip("/")

    def stat(self, key: str) -> Entry:
        with s3_requests(missing=key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return Entry(key, head["ContentLength"], int(head["LastModified"].timestamp()),
                     other_class(head.get("StorageClass")))

    def open(self, key: str) -> BinaryIO:
        full = self._key(key)
        version = S3Storage.pinned.get((self.bucket, full))
        wire = self.wire if version is None else None
        body: Union[_S3Body, _WireBody, None] = wire.get(full) if wire else None
        if body is not None:
            return metered(body, self.throttle)
        with s3_requests(missing=key):
            body = _S3Body(self.client.get_object(
                Bucket=self.bucket, Key=full, **({"VersionId": version} if version else {})
            )["Body"])
        return metered(body, self.throttle)

    # The version each object key is read in, by (bucket, key): set by a run that reads the
    # destination as it stood at a moment from the bucket's own versions (pin), in the main
    # process before it forks its workers, so that every process reads those versions.
    pinned: ClassVar[dict[tuple[str, str], str]] = {}

    def pin(self, versions: dict[str, str]) -> None:
        S3Storage.pinned = {(self.bucket, self.prefix + key): version
                            for key, version in versions.items()}

    def _versioning(self) -> str:
        """GetBucketVersioning's Status ("" when never turned on), or its error, asked once
        per storage: versioning() and protection() both read it."""
        if self._versioning_answer is None:
            try:
                self._versioning_answer = self.client.get_bucket_versioning(
                    Bucket=self.bucket).get("Status", "")
            except Exception as exc:       # noqa: BLE001 - kept, raised to every caller
                self._versioning_answer = exc
        if isinstance(self._versioning_answer, Exception):
            raise self._versioning_answer
        return self._versioning_answer

    def versioning(self) -> str:
        """The bucket's versioning: "Enabled", "Suspended", or "" (never turned on, or the
        service or these keys do not say: then said in a note)."""
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            return self._versioning()
        except ClientError as exc:
            code = s3_error_code(exc)
            if code not in ("AccessDenied", "NotImplemented", "MethodNotAllowed"):
                raise self.error(exc, "cannot read the versioning of") from None
            log.info("note: %s does not say whether it keeps versions (S3 error %s), so only "
                     "its current objects are read", self, code)
            return ""
        except BotoCoreError as exc:
            raise self.error(exc, "cannot read the versioning of") from None

    def protection(self, probe: bool = True) -> Protection:
        """One request each (the first two shared with versioning() and lock_notes()):
        versioning, Object Lock, and with ``probe`` the lifecycle (on a bucket that keeps
        versions) and the probe (see _probe).  A request these keys may not make leaves
        that part unknown."""
        from botocore.exceptions import BotoCoreError, ClientError

        def asked(call: Callable[..., Any], absent: tuple[str, ...] = ()) -> Any:
            try:
                return call()
            except ClientError as exc:
                code = s3_error_code(exc)
                if code in absent:
                    return {}
                if code in ("AccessDenied", "403", "AllAccessDisabled", "NotImplemented"):
                    return None
                raise self.error(exc, "cannot read the protection of") from None
            except BotoCoreError as exc:
                raise self.error(exc, "cannot reach") from None

        versions = asked(self._versioning)
        locked = asked(self.object_lock_rule)
        lock: Optional[str] = None
        retention = ""
        if locked is not None:
            enabled, default = locked
            lock = default.mode if default else "Enabled" if enabled else ""
            if default:
                retention = f"{default.days} day" + ("s" if default.days != 1 else "")
        found = Protection(versioning=versions, lock=lock, retention=retention)
        if not probe:
            return found
        if found.versioning:
            rules = asked(lambda: self.client.get_bucket_lifecycle_configuration(
                Bucket=self.bucket), ("NoSuchLifecycleConfiguration",))
            found = replace(found, expiry=None if rules is None else noncurrent_expiry(
                rules.get("Rules", ()), self.prefix))
        return self._probe(found)

    def _probe(self, found: Protection) -> Protection:
        """Whether these keys can permanently delete a version, tried on PROBE_KEY: its
        versions left by earlier checks first (one still kept by a retention answers, and
        stays); when none is left, a new tiny one is put and its deletion tried.  Nothing
        is bypassed: a probe the retention keeps stays until that ends."""
        from botocore.exceptions import BotoCoreError, ClientError
        key = self.prefix + PROBE_KEY
        try:
            listed = self.client.list_object_versions(Bucket=self.bucket, Prefix=key)
            old = [v["VersionId"] for v in listed.get("Versions", ()) if v["Key"] == key]
        except ClientError:
            old = []               # (not allowed to list versions: probe a new one)
        except BotoCoreError as exc:
            raise self.error(exc, "cannot reach") from None
        try:
            for version in old:
                refused = self._delete_probe(key, version)
                if refused:
                    return replace(found, destroyable=False, kept=f"s3://{self.bucket}/{key}",
                                   why=f"deleting a version was refused ({refused})")
            put = self.client.put_object(Bucket=self.bucket, Key=key, Body=b"probe\n")
            version = put.get("VersionId")
            refused = self._delete_probe(key, version)
        except ClientError as exc:
            return replace(found, why=f"the probe failed ({s3_error_code(exc) or exc})")
        except BotoCoreError as exc:
            raise self.error(exc, "cannot reach") from None
        if refused:
            return replace(found, destroyable=False, kept=f"s3://{self.bucket}/{key}",
                           why=f"deleting a version was refused ({refused})")
        if not version or version == "null":
            return replace(found, destroyable=True,
                           why="the bucket keeps no versions: a delete is final")
        return replace(found, destroyable=True, why="the delete of a version succeeded")

    def _delete_probe(self, key: str, version: Optional[str]) -> str:
        """Delete this version of the probe (the object, unversioned); "" when it is gone,
        else why it was refused."""
        from botocore.exceptions import ClientError
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key,
                                      **({"VersionId": version} if version else {}))
            return ""
        except ClientError as exc:
            code = s3_error_code(exc)
            if code in ("AccessDenied", "403", "InvalidRequest", "ObjectLocked"):
                return code or "refused"
            raise

    def list_versions(self, moment: int, report: ListReport) -> Iterator[tuple[Entry, str]]:
        """The objects as they stood at ``moment`` (epoch second), from the bucket's own
        versions (ListObjectVersions), with the version id of each: of every key the
        newest version written at or before then, unless that is a delete marker (the
        key was deleted then).  Streamed in key order, a key's versions newest first, so
        only the key being read is held."""
        from botocore.exceptions import BotoCoreError, ClientError
        key: Optional[str] = None
        decided = False
        try:
            first = self.client.list_object_versions(Bucket=self.bucket, Prefix=self.prefix,
                                                     MaxKeys=S3_LIST_PAGE)
            items = self._list_split(versions=True) if first.get("IsTruncated") else \
                iter(page_items(first, True))
            for item in items:
                if item["Key"] != key:
                    key, decided = item["Key"], False
                if decided or item["LastModified"].timestamp() > moment:
                    continue
                decided = True
                short = item["Key"][len(self.prefix):]      # (the key being read)
                if "Size" in item and short and not short.endswith("/"):   # not a marker
                    yield (Entry(short, item["Size"], int(item["LastModified"].timestamp()),
                                 other_class(item.get("StorageClass"))), item["VersionId"])
        except (BotoCoreError, ClientError) as exc:
            raise self.error(exc, "cannot list the versions of") from None

    def read(self, key: str, limit: int) -> bytes:
        with self.open(key) as stream:
            return stream.read(limit)

    @staticmethod
    def is_unchanged(stream: BinaryIO, entry: Entry) -> bool:
        """Always: a GET reads one version of an object, whatever is written meanwhile."""
        return True

    @contextlib.contextmanager
    def batch(self) -> Iterator[dict[str, BaseException]]:
        """Nothing to group on S3: each upload is complete and durable when it returns."""
        yield {}

    def discard_unfinished(self) -> None:
        """Nothing to remove: an upload not completed never becomes an object."""

    def _extra(self) -> dict[str, Any]:
        """What every request that makes an object adds: its storage class, and its Object
        Lock retention, from now (each request's own moment)."""
        extra: dict[str, Any] = self.lock.args(time.time()) if self.lock else {}
        if self.config.storage_class:
            extra["StorageClass"] = self.config.storage_class
        return extra

    def store(self, folder: str, fill: Callable[[BinaryIO], R], key_of: Callable[[R], str],
              mtime: Optional[int] = None, mode: int = 0o600, expect: int = 0
              ) -> tuple[R, str]:
        """Encode into a spool (memory, then a temp file), then upload it under its name:
        S3 makes an object visible only once its upload has completed."""
        with spool(expect=expect) as sink, s3_requests():
            result = fill(sink)
            key = key_of(result)
            size = sink.tell()
            sink.seek(0)
            if size < WIRE_BODY_MAX and self._wire_put(key, sink.read()):
                return result, key
            sink.seek(0)
            self._boto_put(key, sink, size)
        return result, key

    def put(self, key: str, data: bytes) -> None:
        with s3_requests():
            if len(data) < WIRE_BODY_MAX and self._wire_put(key, data):
                return
            self._boto_put(key, io.BytesIO(data), len(data))

    def _wire_put(self, key: str, data: bytes) -> bool:
        """PutObject sent by our own client; False: not sent (no wire, or it gave up)."""
        full_key = self._key(key)
        if self.wire is None:
            return False
        if self.throttle:
            self.throttle.take(len(data))
        headers = self.lock.headers(time.time()) if self.lock else {}
        if self.config.storage_class:
            headers["x-amz-storage-class"] = self.config.storage_class
        return self.wire.put(full_key, data, headers)

    def _boto_put(self, key: str, body: BinaryIO, size: int) -> None:
        """PutObject, or a multipart upload when large, made by boto3 from ``body``."""
        if self.throttle:
            self._meter_uploads()
        if size < S3_MULTIPART_THRESHOLD:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body,
                                   **self._extra())
        else:
            self._upload_parts(body, key, size)

    def _meter_uploads(self) -> None:
        """Have this process's client send upload bodies through the throttle.  Not the
        body store() hands it: botocore's signer reads that once for its hash before it is
        sent (and again on every retry), and a hash is no traffic.  So the body is metered
        where the request goes out, in botocore's before-send event (registered once per
        client: the unique ids make a second registration nothing)."""
        for operation in ("PutObject", "UploadPart"):
            self.client.meta.events.register(f"before-send.s3.{operation}",
                                             self._metered_send, unique_id=f"esb-{operation}")

    def _metered_send(self, request: Any, **_: Any) -> None:
        throttle = self.throttle
        assert throttle is not None          # (registered only with one: _boto_put)
        if hasattr(request.body, "read"):
            request.body = Metered(request.body, throttle)
        elif request.body:
            throttle.take(len(request.body))

    def _abort_others(self, full_key: str, kept: str) -> None:
        """A create request retried after its answer was lost leaves an empty upload of the
        same (content-named) key behind: abort every other upload of that key."""
        listing = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=full_key)
        for upload in listing.get("Uploads", ()):
            if upload["Key"] == full_key and upload["UploadId"] != kept:
                with contextlib.suppress(*s3_failures()):
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=full_key,
                                                       UploadId=upload["UploadId"])

    def _upload_parts(self, source: BinaryIO, key: str, size: int) -> None:
        """Multipart upload holding one part in memory at a time; on any failure the upload
        is aborted, so no half-written object lingers (or is billed)."""
        part_size = s3_part_size(size)
        where = {"Bucket": self.bucket, "Key": self._key(key)}
        upload = self.client.create_multipart_upload(**where, **self._extra())["UploadId"]
        try:
            parts = []
            for number, start in enumerate(range(0, size, part_size), 1):
                body = _Window(source, start, min(part_size, size - start))
                answer = self.client.upload_part(**where, UploadId=upload, PartNumber=number,
                                                 Body=body)
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
            self.client.complete_multipart_upload(**where, UploadId=upload,
                                                  MultipartUpload={"Parts": parts})
            self._abort_others(where["Key"], upload)
        except BaseException:
            with contextlib.suppress(*s3_failures()):
                self.client.abort_multipart_upload(**where, UploadId=upload)
            raise

    def rename(self, old: str, new: str, size: int = 0) -> None:
        """Server-side copy, then delete the old key (multipart copy above 5 GB)."""
        source = {"Bucket": self.bucket, "Key": self._key(old)}
        with s3_requests():
            if size < S3_COPY_LIMIT:
                self.client.copy_object(CopySource=source, Bucket=self.bucket,
                                        Key=self._key(new), **self._extra())
            else:
                self.client.copy(source, self.bucket, self._key(new),
                                 ExtraArgs=self._extra() or None)
            self.client.delete_object(Bucket=self.bucket, Key=self._key(old))

    def remove(self, key: str) -> None:
        with s3_requests():
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def thaw_state(self, key: str) -> Thaw:
        """HeadObject's Restore header says it (see parse_restore_header)."""
        with s3_requests(missing=key):
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        return parse_restore_header(head.get("Restore"))

    def thaw(self, key: str, days: int, tier: str) -> bool:
        """RestoreObject: a thawed copy for ``days``; S3 answers RestoreAlreadyInProgress
        while one is under way (asked again once thawed, it only extends the days)."""
        from botocore.exceptions import ClientError
        with s3_requests(missing=key):
            try:
                self.client.restore_object(
                    Bucket=self.bucket, Key=self._key(key), RestoreRequest={
                        "Days": days, "GlacierJobParameters": {"Tier": tier}})
            except ClientError as exc:
                if s3_error_code(exc) != "RestoreAlreadyInProgress":
                    raise
                return False
        return True

    def remove_many(self, keys: list[str]) -> dict[str, BaseException]:
        """DeleteObjects, S3_DELETE_BATCH keys a request: each key's own error comes back in
        the answer, and a request that fails fails its keys."""
        failed: dict[str, BaseException] = {}
        for key in keys:
            try:
                self._key(key)
            except UnusableNameError as exc:
                failed[key] = exc
        keys = [key for key in keys if key not in failed]
        for start in range(0, len(keys), S3_DELETE_BATCH):
            chunk = keys[start:start + S3_DELETE_BATCH]
            try:
                with s3_requests():
                    answer = self.client.delete_objects(Bucket=self.bucket, Delete={
                        "Objects": [{"Key": self._key(key)} for key in chunk],
                        "Quiet": True})
            except TransferError as exc:
                failed.update((key, exc) for key in chunk)
                continue
            for error in answer.get("Errors", ()):
                key = error.get("Key", "")[len(self.prefix):]
                if key in chunk and error.get("Code") != "NoSuchKey":
                    failed[key] = TransferError(f"S3 error {error.get('Code', '')}".strip())
        return failed


def page_items(page: dict, versions: bool = False) -> list[dict]:
    """The objects of a ListObjectsV2 page, or (``versions``) a ListObjectVersions page's
    versions and delete markers (two lists there) in one, in the order S3 keeps them: by
    key, then newest first (on the same second, the one S3 calls latest first)."""
    if not versions:
        return page.get("Contents", [])
    items = [*page.get("Versions", ()), *page.get("DeleteMarkers", ())]
    return sorted(items, key=lambda item: (item["Key"].encode("utf-8", "surrogatepass"),
                                           -item["LastModified"].timestamp(),
                                           not item.get("IsLatest")))


def parse_restore_header(header: Optional[str]) -> Thaw:
    """The thaw state an S3 Restore header gives: none (no thaw asked for),
    ``ongoing-request="true"`` (under way), or ``ongoing-request="false",
    expiry-date="Fri, 21 Dec 2012 00:00:00 GMT"`` (thawed until then)."""
    if not header:
        return Thaw("archived")
    if re.search(r'ongoing-request\s*=\s*"true"', header):
        return Thaw("thawing")
    until = ""
    match = re.search(r'expiry-date\s*=\s*"([^"]+)"', header)
    if match:
        import email.utils
        with contextlib.suppress(TypeError, ValueError, IndexError):
            moment = email.utils.parsedate_to_datetime(match[1])
            until = moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Thaw("thawed", until)


def _local_storage(config: StorageConfig, use: StorageUse) -> Storage:
    if use.confined:
        return RestoreFolder(config.local_path or "", use.private, use.owned,
                             throttle=use.throttle)
    return LocalStorage(config.local_path or "", reap=use.reap, throttle=use.throttle,
                        source=use.source)


def _s3_storage(config: StorageConfig, use: StorageUse) -> Storage:
    return S3Storage(config, use.requests, throttle=use.throttle, lock=use.lock)


def _s3_problems(config: StorageConfig) -> list[tuple[str, str]]:
    """An S3 section's own problems: text S3 cannot carry, keys given by halves."""
    problems = []
    for key in STORAGE_KINDS["s3_bucket"].keys:
        value = config.get(key)
        if value and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:      # a variable in another encoding than UTF-8
                problems.append((key, "is not UTF-8 text, which S3 needs; fix the value"))
    if bool(config.aws_access_key_id) != bool(config.aws_secret_access_key):
        problems.append(("aws_access_key_id / aws_secret_access_key",
                         "set both, or neither (to use the default AWS credentials)"))
    return problems


# The kinds of storage.  A new backend is its class and one register_storage() here (or
# anywhere before load_config runs): see CONTRIBUTING.md, "Adding a storage".
register_storage(StorageKind("local_path", ("local_path",), _local_storage))
register_storage(StorageKind(
    "s3_bucket", ("aws_access_key_id", "aws_secret_access_key", "s3_bucket", "base_path",
                  "endpoint_url", "signature_version", "region_name", "storage_class"),
    _s3_storage, check=_s3_problems))


def make_storage(config: StorageConfig, confined: bool = False, reap: bool = False,
                 requests: int = 0, throttle: Optional[Throttle] = None,
                 private: bool = True, owned: bool = False, source: bool = False,
                 lock: Optional[ObjectLock] = None) -> Storage:
    """The storage a configuration section names, made by its kind (STORAGE_KINDS; a
    section load_config() accepted has exactly one).  ``confined``: a restore target,
    whose writes never leave the root (a RestoreFolder, with ``private`` and ``owned``);
    ``reap``: remove stale temporary files of killed runs (where this run writes);
    ``requests``: how many a remote storage may have in flight at once in this process;
    ``throttle``: the bandwidth budget its object data passes through (the
    destination's); ``source``: a backup's source, where nothing is ours (its listing
    leaves out no name of ours); ``lock``: the Object Lock retention of every object it
    writes (an S3 destination's)."""
    use = StorageUse(confined=confined, reap=reap, requests=requests, throttle=throttle,
                     private=private, owned=owned, source=source, lock=lock)
    kinds = storage_kinds_of(config)
    kind = kinds[0] if kinds else STORAGE_KINDS["local_path"]   # (an empty section: a
    return kind.make(config, use)                               # folder, as it always was)


# =====================================================================================
# Configuration
# =====================================================================================

STORAGE_SECTIONS = ("src", "dest", "restore")
# (the keys of the rest of the configuration are SETTINGS' rows, below; a storage's, its
# kind's: STORAGE_KINDS)
LEGACY_KEYS = ("encryption_key",)  # read by the existing tool's code, which derived it itself
                                    # (a configured one was never used): accepted, ignored
STORAGE_PREFIXES = tuple(section.upper() + "_" for section in STORAGE_SECTIONS)
# ^ every variable that starts with one of these must be a storage key's (or RESTORE_PROCESSES)
OTHER_VARIABLES = ("CRONTAB", "TZ", "BACKUP_EXIT_CODE")   # crontab.sh's, and the one a
                                    # post_command gets: ours, though not configuration
SERVICE_LINK = re.compile(r"_(SERVICE_HOST|SERVICE_PORT(_\w+)?|PORT(_\d+_(TCP|UDP|SCTP)"
                          r"(_(PROTO|PORT|ADDR))?)?)$")
# ^ what Kubernetes (and Docker's legacy links) inject for a service, e.g. a service named
#   "dest" gives DEST_SERVICE_HOST and DEST_PORT_443_TCP_ADDR: never a typo of ours
TYPO_RATIO = 0.85                   # difflib ratio from which an unknown variable with as
                                    # many words as one of ours is taken for a typo of it
                                    # (VERSION_KEEP_DAYS: 0.97; LOG_LEVEL-GZIP_LEVEL: 0.74)
NOTIFY_ON = ("failure", "always")   # when the webhook is sent
THAW_TIERS = ("bulk", "standard", "expedited")   # thaw_tier: RestoreObject's tiers, the
                                    # cheapest (and slowest) first
THAW_DAYS = 7                       # default thaw_days: how long a thawed copy stays readable
OBJECT_LOCK_MODES = ("governance", "compliance")   # object_lock_mode: S3's Object Lock modes
LOCK_DAYS_MAX = 36500               # object_lock_days at most (S3 takes up to 100 years)
RESTORE_PERMISSIONS = ("private", "umask")   # restore_permissions: files 0600 in folders
                                    # 0700 (the format keeps no mode), or as the umask says
RATE_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}   # bandwidth_limit's suffixes
                                    # (powers of 1024, as in rclone's --bwlimit)
FALSE_WORDS = ("false", "no", "0", "off", "n")
TRUE_WORDS = ("true", "yes", "1", "on", "y")
DEFAULT_CONFIG = "config.json"
DEFAULT_RESTORE = os.path.join(tempfile.gettempdir(), "encrypted_s3_backup_restore")
REQUESTS_IN_FLIGHT = 64   # default requests_in_flight (chosen by bench/bench.py --rtt)
COMMAND_TIMEOUT = 3600    # seconds; default command_timeout: a pre_command or post_command
                          # still running then is stopped (a dump of a large database fits)
SHOWN_MAX = 60            # characters of a bad value a configuration problem quotes


def env_name(*parts: str) -> str:
    """``("dest", "s3_bucket")`` -> ``DEST_S3_BUCKET``."""
    return "_".join(parts).upper()


def _shown(value: Any) -> str:
    """A raw value as a problem quotes it: repr, cut short (a value can be huge)."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):   # nested too deeply; an int too long to print
        return f"a {type(value).__name__} too large to show"
    return text if len(text) <= SHOWN_MAX else text[:SHOWN_MAX - 3] + "..."


def parse_rate(text: str) -> int:
    """Bytes per second from "4M", "512K", "1.5G" or "250000" (K, M and G are powers of
    1024; a trailing "B", "iB" or "/s" is allowed; 0 means no limit).  ValueError with the
    message for the user when it is none of these."""
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([kmg]?)(?:i?b)?(?:/s)?", str(text).strip(),
                         re.IGNORECASE)
    scaled = float(match[1]) * RATE_UNITS[match[2].lower()] if match else -1.0
    rate = int(scaled) if scaled < float(sys.maxsize) else -1   # (inf: too many digits)
    if match is None or rate < 0 or (rate == 0 and float(match[1]) > 0):
        raise ValueError(f"{_shown(text)} is not a rate: bytes per second as a number with an "
                         "optional K, M or G (powers of 1024), e.g. 4M; 0 for no limit")
    return rate


def _ignore_patterns(value: Any, check: "_Checker", key: str = "ignore_regex"
                     ) -> tuple[str, ...]:
    """A JSON list, a JSON list in a string (environment), or one pattern."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        stripped = value.strip()
        try:
            value = json.loads(stripped) if stripped.startswith("[") else [value]
        except json.JSONDecodeError:
            value = [value]          # one pattern that starts with a character class
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        check.problem(key, "must be a list of regular expressions")
        return ()
    for pattern in value:
        try:
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError) as exc:   # (a{99999999999}, or
            why = str(exc) or type(exc).__name__                  # "(" * 10000)
            check.problem(key, f"{_shown(pattern)} is not a regular expression ({why})")
    return tuple(value)


class _Checker:
    """Coerces raw values (JSON types or environment strings), collecting one line per problem."""

    def __init__(self, raw: dict):
        self.raw = raw
        self.problems: list[str] = []
        self.messages: list[str] = []    # the same, without the key (a flag's own error)

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key} (environment {env_name(*key.split('.'))}): {message}")
        self.messages.append(message)

    def read(self, row: "Setting") -> Any:
        """A setting's value as its row's type and bounds say: its default when unset (or
        when it is not valid, with a problem)."""
        key = row.key
        if row.type == "bool":
            return self.boolean(key, row.default)
        if row.type == "int":
            return self.integer(key, row.default, row.low, row.high, row.zero_means_default)
        if row.type == "choice":
            return self.choice(key, row.choices, row.default)
        if row.type == "url":
            return self.url(key)
        if row.type == "rate":
            return self.rate(key)
        if row.type == "patterns":
            return _ignore_patterns(self.raw.get(key), self, key)
        text = self.text(key)
        return row.default if text is None else text

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = value.strip().lower() if isinstance(value, str) else (
            str(value) if isinstance(value, int) and -10 < value < 10 else "")
        if text in FALSE_WORDS or text in TRUE_WORDS:
            return text in TRUE_WORDS
        self.problem(key, f"{_shown(value)} is not true or false")
        return default

    def integer(self, key: str, default: Optional[int], low: int, high: Optional[int] = None,
                zero_means_default: bool = False) -> Optional[int]:
        value = self.raw.get(key)
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null",
                                                                               "none")):
            return default
        number = value if isinstance(value, int) and not isinstance(value, bool) else None
        if isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:           # (also a number of more digits than Python reads)
                number = None
        if number is None or number < low or (high is not None and number > high):
            span = f"from {low} to {high}" if high is not None else f"{low} or more"
            self.problem(key, f"{_shown(value)} is not a whole number {span}")
            return default
        return default if (zero_means_default and number == 0) else number

    def text(self, key: str) -> Optional[str]:
        value = self.raw.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            self.problem(key, "must be text")
            return None
        text = str(value)
        try:
            text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:     # a lone "\ud800" escape in the JSON file
            self.problem(key, "holds a character that is not text (a lone surrogate "
                              "\\ud800-\\udfff escape); fix the value")
            return None
        if "\0" in text and key != "encryption_password":    # paths, commands, URLs
            self.problem(key, "holds a NUL character; fix the value")
            return None
        return text

    def url(self, key: str) -> Optional[str]:
        """An http:// or https:// URL.  The problem never quotes it: it holds a key."""
        import urllib.parse
        text = self.text(key)
        if text is None:
            return None
        try:
            parts = urllib.parse.urlsplit(text.strip())
            good = parts.scheme.lower() in ("http", "https") and bool(parts.hostname) and (
                parts.port is None or parts.port > 0)    # (a port not a number: ValueError)
        except ValueError:                               # (as a bad "[::1" host is)
            good = False
        if not good or re.search(r"[\s\x00-\x1f\x7f]", text.strip()):
            self.problem(key, "must be an http:// or https:// URL without spaces (the value "
                              "is not shown: it holds a key)")
            return None
        return text.strip()

    def choice(self, key: str, choices: tuple[str, ...], default: Optional[str] = None
               ) -> Optional[str]:
        """One of ``choices`` (as written there: the value's case does not count);
        ``default`` when unset."""
        text = self.text(key)
        if text is None:
            return default
        if text.strip().lower() not in [choice.lower() for choice in choices]:
            self.problem(key, f"{text.strip().lower()!r} is not one of: {', '.join(choices)}")
            return default
        return next(choice for choice in choices if choice.lower() == text.strip().lower())

    def rate(self, key: str) -> int:
        """Bytes per second (see parse_rate); 0 when unset."""
        text = self.text(key)
        try:
            return parse_rate(text) if text is not None else 0
        except ValueError as exc:
            self.problem(key, str(exc))
            return 0


# -------------------------------------------------------------- the settings, one row each

def _password(value: str, values: dict[str, Any], check: _Checker) -> str:
    """Required while encrypt is on; for aes, Latin-1 (see _password_bytes)."""
    if values["encrypt"] and not value:
        check.problem("encryption_password", "is required while encrypt is on")
    elif values["encrypt"] and values["encryption_type"] == "aes":
        try:
            _password_bytes("aes", value)
        except ConfigError as exc:
            check.problem("encryption_password", exc.message)
    return value


def _salt(value: Optional[str], values: dict[str, Any], check: _Checker) -> Optional[bytes]:
    """SALT_LEN bytes as hex digits, or None."""
    if not value:
        return None
    try:
        salt = bytes.fromhex(value.strip())
    except ValueError:
        salt = b""
    if len(salt) != SALT_LEN:
        check.problem("encryption_salt", f"must be {SALT_LEN * 2} hex digits "
                      "(generate_salt.py prints one)")
        return None
    return salt


def _needs_encrypt(value: bool, values: dict[str, Any], check: _Checker) -> bool:
    if value and not values["encrypt"]:
        check.problem("encrypt_filenames", "needs encrypt on (names are encrypted like "
                      "contents)")
    return value


def _capitalized(value: str, values: dict[str, Any], check: _Checker) -> str:
    return value.capitalize()          # (RestoreObject's spelling of a tier: "Bulk")


def _lock_pair(value: Optional[int], values: dict[str, Any], check: _Checker
               ) -> Optional[int]:
    """object_lock_days with object_lock_mode: both set, or neither (a bad mode is its
    own problem, and leaves both unset)."""
    mode_given = check.raw.get("object_lock_mode") not in (None, "")
    if mode_given and values["object_lock_mode"] is None:
        return None
    if mode_given != (value is not None):
        if check.raw.get("object_lock_days") is None or value is not None:
            missing, other = (("object_lock_days", "object_lock_mode") if mode_given
                              else ("object_lock_mode", "object_lock_days"))
            check.problem(missing, f"is needed with {other} (set both, or neither)")
        return None
    return value


Validator = Callable[[Any, dict[str, Any], _Checker], Any]
SETTING_TYPES = ("bool", "int", "text", "url", "choice", "rate", "patterns")   # _Checker.read


@dataclass(frozen=True)
class Setting:
    """One key of the configuration (a row of SETTINGS): everything about it is here.

    ``type``: how a value is read and checked: "bool", "int" (from ``low`` to ``high``;
    0 gives the default when ``zero_means_default``), "text", "url" (http or https),
    "choice" (one of ``choices``, any case), "rate" (bytes per second, see parse_rate),
    "patterns" (regular expressions).  ``default``: the value when unset (Config's field
    takes it from here).  ``validate``: a check that needs code (other keys' values, read
    before it in SETTINGS' order, come in its second argument); it returns the value to
    keep.  ``into``: where the value lands on Config: "" for Config's field of the same
    name, or, while Config has none, Config.extra[key]; "codec.password" for a field of
    a part (see _PARTS).  ``flag``: the command-line option that sets it too (its
    --help is ``help``)."""

    key: str
    type: str
    default: Any
    help: str
    low: int = 0
    high: Optional[int] = None
    choices: tuple[str, ...] = ()
    zero_means_default: bool = False
    validate: Optional[Validator] = None
    into: str = ""
    flag: str = ""
    metavar: str = ""

    def __post_init__(self) -> None:
        if self.type not in SETTING_TYPES or (self.type == "choice") != bool(self.choices):
            raise ValueError(f"setting {self.key}: type {self.type!r} is not one of "
                             f"{SETTING_TYPES}, or choices do not go with it")

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return env_name(self.key)


def _codec_default(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(Codec) if f.name == name)


SETTINGS: tuple[Setting, ...] = (
    Setting("encrypt", "bool", _codec_default("encrypt"),
            "encrypt objects (and, with encrypt_filenames, their names)", into="codec.encrypt"),
    Setting("encryption_type", "choice", _codec_default("encryption_type"),
            "aes (AES-256-GCM, PBKDF2) or cha (XChaCha20-Poly1305, Argon2id)",
            choices=ENCRYPTION_TYPES, into="codec.encryption_type"),
    Setting("encryption_password", "text", _codec_default("password"),
            "the password every object's key is derived from", validate=_password,
            into="codec.password"),
    Setting("encryption_salt", "text", _codec_default("salt"),
            "32 hex digits: one salt for every object, so its key is derived once",
            validate=_salt, into="codec.salt"),
    Setting("encrypt_filenames", "bool", _codec_default("encrypt_filenames"),
            "encrypt object names too", validate=_needs_encrypt,
            into="codec.encrypt_filenames"),
    Setting("compress", "bool", _codec_default("compress"),
            "compress before encrypting (xz up to 10 MiB, gzip above)", into="codec.compress"),
    Setting("lzma_level", "int", _codec_default("lzma_level"),
            "xz level 1-9 (0: the default)", high=9, zero_means_default=True,
            into="codec.lzma_level"),
    Setting("gzip_level", "int", _codec_default("gzip_level"),
            "gzip level 1-9 (0: the default)", high=9, zero_means_default=True,
            into="codec.gzip_level"),
    Setting("backup_processes", "int", 5, "worker processes of a backup", low=1, high=256),
    Setting("restore_processes", "int", 8, "worker processes of a restore or verify",
            low=1, high=256),
    Setting("deleted_keep_days", "int", None,
            "days a deleted file's object is kept (unset: for ever)"),
    Setting("versions_keep_days", "int", 0,
            "days a replaced file's old contents are kept (0: no history)",
            high=STAMP_DAYS - 1),
    Setting("requests_in_flight", "int", REQUESTS_IN_FLIGHT,
            "requests a remote storage has at once", low=1, high=1024),
    Setting("ignore_regex", "patterns", (),
            "regular expressions of source paths not backed up"),
    Setting("healthcheck_url", "url", None, "a health check pinged at start and end",
            into="alerts.healthcheck_url"),
    Setting("notify_url", "url", None, "a webhook that gets each run's summary",
            into="alerts.notify_url"),
    Setting("notify_on", "choice", NOTIFY_ON[0], "when the webhook is sent",
            choices=NOTIFY_ON, into="alerts.notify_on"),
    Setting("metrics_file", "text", None, "a Prometheus text file written after each run",
            into="alerts.metrics_file"),
    Setting("pre_command", "text", None, "a shell command run before a backup"),
    Setting("post_command", "text", None, "a shell command run after a backup"),
    Setting("command_timeout", "int", COMMAND_TIMEOUT,
            "seconds pre_command or post_command may run", low=1),
    Setting("bandwidth_limit", "rate", 0,
            "at most this many bytes per second of object data to and from the "
            "destination, for all processes together; K, M, G suffixes (powers of 1024), "
            "e.g. 4M; 0 for no limit", flag="--bwlimit", metavar="RATE"),
    Setting("thaw_days", "int", THAW_DAYS, "days a thawed archive object stays readable",
            low=1),
    Setting("thaw_tier", "choice", "Bulk", "RestoreObject's tier for a thaw",
            choices=THAW_TIERS, validate=_capitalized),
    Setting("restore_permissions", "choice", RESTORE_PERMISSIONS[0],
            "restored files private (0600 in 0700 folders) or as the umask says",
            choices=RESTORE_PERMISSIONS),
    Setting("object_lock_mode", "choice", None, "the Object Lock mode of what a backup writes",
            choices=tuple(mode.upper() for mode in OBJECT_LOCK_MODES), into="object_lock.mode"),
    Setting("object_lock_days", "int", None, "days each object written stays locked",
            low=1, high=LOCK_DAYS_MAX, validate=_lock_pair, into="object_lock.days"),
)


def setting_keys() -> tuple[str, ...]:
    """Every top-level key of the configuration but the storage sections, in SETTINGS'
    order."""
    return tuple(row.key for row in SETTINGS)


def setting_default(key: str) -> Any:
    """A key's default, from its row."""
    return next(row.default for row in SETTINGS if row.key == key)


def read_settings(check: _Checker, rows: Iterable[Setting]) -> dict[str, Any]:
    """Each row's value, checked, by key (in the rows' order: a validator sees the
    values read before it)."""
    values: dict[str, Any] = {}
    for row in rows:
        value = check.read(row)
        values[row.key] = row.validate(value, values, check) if row.validate else value
    return values


@dataclass(frozen=True)
class Alerts:
    """Where a run reports how it went (see Monitoring).  The URLs carry their checks'
    keys: they are secrets, never shown whole (repr leaves them out)."""

    healthcheck_url: Optional[str] = field(default=None, repr=False)
    notify_url: Optional[str] = field(default=None, repr=False)
    notify_on: str = setting_default("notify_on")
    metrics_file: Optional[str] = None


def _object_lock(mode: Optional[str] = None, days: Optional[int] = None
                 ) -> Optional[ObjectLock]:
    return ObjectLock(mode, days) if mode is not None and days else None


_PARTS: dict[str, Callable[..., Any]] = {"codec": Codec, "alerts": Alerts,
                                         "object_lock": _object_lock}
# ^ the parts of Config that settings fill (Setting.into): each made from its rows' values


@dataclass(frozen=True)
class Config:
    """Everything a run needs; built once by load_config() and handed to every worker.
    The settings' defaults are their rows' in SETTINGS."""

    src: Optional[StorageConfig]
    dest: Optional[StorageConfig]
    restore: StorageConfig
    codec: Codec
    backup_processes: int = setting_default("backup_processes")
    restore_processes: int = setting_default("restore_processes")
    deleted_keep_days: Optional[int] = setting_default("deleted_keep_days")
    ignore_regex: tuple[str, ...] = setting_default("ignore_regex")
    versions_keep_days: int = setting_default("versions_keep_days")   # 0: no history
    requests_in_flight: int = setting_default("requests_in_flight")   # a remote storage's
    alerts: Alerts = field(default_factory=Alerts)
    pre_command: Optional[str] = setting_default("pre_command")   # shell commands run
    post_command: Optional[str] = setting_default("post_command")   # around a backup
    command_timeout: int = setting_default("command_timeout")   # seconds each may run
    bandwidth_limit: int = setting_default("bandwidth_limit")   # bytes per second of the
                                       # destination's object data; 0: no limit
    throttle: Optional[Throttle] = field(default=None, repr=False, compare=False)
    # ^ the shared bucket of bandwidth_limit: main() makes it before any worker is forked
    thaw_days: int = setting_default("thaw_days")   # days a thawed object stays readable
    thaw_tier: str = setting_default("thaw_tier")   # RestoreObject tier: Bulk, Standard or
                                                    # Expedited
    restore_permissions: str = setting_default("restore_permissions")   # RESTORE_PERMISSIONS
    object_lock: Optional[ObjectLock] = None   # the retention every object written gets
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    # ^ the value of each setting Config has no field for (a new row, until it gets one)

    def section(self, role: str) -> StorageConfig:
        """The storage section of ``role`` ("src" or "dest"), which this run needs.
        load_config(needs=...) refuses a configuration without it, so this error is the
        last guard, worded for a user all the same."""
        value: Optional[StorageConfig] = getattr(self, role)
        if value is None:
            prefix = role.upper()
            raise ConfigError(f"this run needs a {role!r} storage: set {prefix}_LOCAL_PATH or "
                              f"{prefix}_S3_BUCKET, or the {role!r} section of config.json")
        return value


def config_variables() -> list[str]:
    """Every environment variable the configuration reads, in the README's order."""
    return ([env_name(section, key) for section in STORAGE_SECTIONS for key in storage_keys()]
            + [row.env for row in SETTINGS])


def read_raw_config(path: Optional[str], environ: dict[str, str]) -> tuple[dict, list[str]]:
    """The merged key/value view: JSON file first, environment variables on top.

    ``path`` None means the default ``config.json``, which may be absent when the
    environment holds the config.  Returns (raw values, warnings).
    """
    raw: dict[str, Any] = {}
    warnings: list[str] = []
    file_path = path or DEFAULT_CONFIG
    if os.path.exists(file_path):
        try:
            with open(file_path, encoding="utf-8") as handle:
                raw = json.load(handle)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {file_path} is not valid JSON (line {exc.lineno}, "
                              f"column {exc.colno}: {exc.msg}); fix the file") from None
        except UnicodeDecodeError:       # (a ValueError: before the next one)
            raise ConfigError(f"config file {file_path} is not UTF-8 text; save it as UTF-8 "
                              "(a Latin-1 password stays the same password)") from None
        except (ValueError, RecursionError) as exc:   # JSON, but more than Python holds
            why = ("it nests arrays or objects too deeply" if isinstance(exc, RecursionError)
                   else "a number in it has too many digits")
            raise ConfigError(f"config file {file_path} cannot be read: {why}; fix the "
                              "file") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file_path}: {exc.strerror}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"config file {file_path} must hold a JSON object {{...}}")
        has_secret = raw.get("encryption_password") or any(
            isinstance(raw.get(s), dict) and raw[s].get("aws_secret_access_key")
            for s in STORAGE_SECTIONS)
        if has_secret and os.stat(file_path).st_mode & 0o077:
            warnings.append(f"config file {file_path} holds secrets and is readable by other "
                            f"users; run: chmod 600 {file_path}")
    elif path is not None:
        # The existing tool never opens the file while a configuration variable is set, so
        # an old "--config /config.json" must keep working once the file is gone.
        if not any(environ.get(name, "").strip() for name in config_variables()):
            raise ConfigError(f"config file {path} does not exist; check --config")
        warnings.append(f"config file {path} does not exist; using the environment "
                        "variables alone (remove --config to silence this)")
    def from_env(*parts: str) -> Optional[str]:
        # An empty variable counts as unset (docker-compose writes "${X}" as ""), as it did
        # for the existing tool.
        value = environ.get(env_name(*parts), "")
        return value if value.strip() else None

    raw.update({key: value for key in setting_keys() if (value := from_env(key)) is not None})
    for section in STORAGE_SECTIONS:
        value = raw.get(section)
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"config key {section!r} must be an object like "
                              '{"local_path": "/data"}')
        merged: dict[str, Any] = dict(value or {})
        overrides = {k: value for k in storage_keys()
                     if (value := from_env(section, k)) is not None}
        if any(key in overrides for key in STORAGE_KINDS):   # the environment picks the kind
            for key in STORAGE_KINDS:
                if key not in overrides:
                    merged.pop(key, None)
        merged.update(overrides)
        raw[section] = merged or None
    return raw, warnings


def closest(name: str, known: Iterable[str], cutoff: float) -> Optional[str]:
    """The name of ``known`` most like ``name`` (difflib's ratio, at least ``cutoff``) and
    made of as many "_"-separated words, or None."""
    import difflib
    words = name.count("_")
    scored = [(difflib.SequenceMatcher(None, name, k).ratio(), k) for k in known
              if k.count("_") == words]
    best = max(scored, default=(0.0, ""))
    return best[1] if best[0] >= cutoff else None


def unknown_keys(raw: dict, file_path: str) -> list[str]:
    """A problem for each top-level key of the config file that no setting reads (a typo
    must not leave its setting at the default: "version_keep_days" turned history off)."""
    problems = []
    known = (*setting_keys(), *STORAGE_SECTIONS)
    for key in raw:
        if key in known or key in LEGACY_KEYS:
            continue
        near = closest(str(key), known, 0.75) if isinstance(key, str) else None
        fix = (f"did you mean {near!r} (environment {env_name(near)})? rename it" if near
               else "remove it (README, Configuration, lists every key)")
        problems.append(f"config file {file_path}: unknown key {key!r}; {fix}")
    return problems


def unknown_variables(environ: dict[str, str]) -> list[str]:
    """A problem for each environment variable that looks meant for this tool but is not
    one it reads: one starting with SRC_, DEST_ or RESTORE_ (not a Kubernetes service
    link), or one whose upper-case name is one of ours or close to one (TYPO_RATIO, as
    many words).  Everything else in an environment (PATH, AWS_REGION, ...) is not ours."""
    known = (*config_variables(), *(env_name(k) for k in LEGACY_KEYS))
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if name in known or upper in OTHER_VARIABLES:
            continue
        if upper in known:
            problems.append(f"environment variable {name}: names are upper case; rename it "
                            f"to {upper}")
            continue
        near = closest(upper, known, TYPO_RATIO)
        ours = name.startswith(STORAGE_PREFIXES) and not SERVICE_LINK.search(name)
        if near is None and ours:
            import difflib
            prefix = name.split("_")[0].lower()        # (a storage's own variables only)
            section = [env_name(prefix, key) for key in storage_keys()]
            near = next(iter(difflib.get_close_matches(name, section, 1, 0.6)), None)
            if near is None:
                keys = ", ".join(env_name(k) for k in storage_keys())
                problems.append(f"environment variable {name} is not one this tool reads (a "
                                f"storage's variables end in {keys}); rename or unset it")
                continue
        if near is not None:
            problems.append(f"environment variable {name} is not one this tool reads; did "
                            f"you mean {near}? rename it (or unset it)")
    return problems


def _storage(section: str, values: Optional[dict], check: _Checker) -> Optional[StorageConfig]:
    if not values:
        return None
    keys = storage_keys()
    sub = _Checker({f"{section}.{k}": v for k, v in values.items()})
    unknown = sorted(set(values) - set(keys))
    for key in unknown:
        near = closest(key, keys, 0.75)
        check.problem(f"{section}.{key}", "unknown storage key; " + (
            f"did you mean {near!r}? rename it" if near else
            "valid keys: " + ", ".join(keys)))
    config = StorageConfig.of({k: sub.text(f"{section}.{k}") for k in keys})
    check.problems += sub.problems

    def where(*names: str) -> str:
        return (" / ".join(f"{section}.{name}" for name in names) + " (environment "
                + " / ".join(env_name(section, name) for name in names) + ")")

    kinds = storage_kinds_of(config)
    if len(kinds) == 1 and kinds[0].check:
        for key, message in kinds[0].check(config):
            check.problems.append(f"{where(*key.split(' / '))}: {message}")
    choosing = [kind.key for kind in STORAGE_KINDS.values()]
    if len(kinds) > 1:
        check.problems.append(f"{where(*(kind.key for kind in kinds))}: both are set; "
                              "keep one")
    elif not kinds:
        check.problems.append(f"{where(*choosing)}: set one (a folder, or a bucket with its "
                              "keys)")
    return config


def load_config(path: Optional[str], environ: Optional[dict[str, str]] = None,
                needs: tuple[str, ...] = ("src", "dest"), flags: Optional[dict[str, Any]] = None
                ) -> tuple[Config, list[str]]:
    """Resolve the configuration: defaults < JSON file < environment variables < ``flags``.

    (Command-line flags mostly choose the action; the few that set a config value, like
    --bwlimit for bandwidth_limit, come in ``flags`` by key: see Setting.flag.)  Every
    key is checked as its row of SETTINGS says, a storage section as its kind's
    (STORAGE_KINDS).  Every problem is collected and reported together, one line each, as
    a ConfigError; a config file key or an environment variable meant for this tool that
    it does not read is one (unknown_keys, unknown_variables).
    """
    environ = dict(os.environ if environ is None else environ)
    raw, warnings = read_raw_config(path, environ)
    check = _Checker(raw)
    check.problems += unknown_keys(raw, path or DEFAULT_CONFIG) + unknown_variables(environ)
    raw.update(flags or {})
    storages = {s: _storage(s, raw.get(s), check) for s in STORAGE_SECTIONS}
    for section in needs:
        if storages[section] is None:
            choosing = " or ".join(env_name(section, key) for key in STORAGE_KINDS)
            check.problems.append(f"{section} is missing: set {choosing}, or a \"{section}\" "
                                  "object in the config file")
    values = read_settings(check, SETTINGS)
    parts: dict[str, dict[str, Any]] = {name: {} for name in _PARTS}
    own: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    fields = {f.name for f in dataclasses.fields(Config)}
    for row in SETTINGS:
        if row.into:
            part, name = row.into.split(".")
            parts[part][name] = values[row.key]
        elif row.key in fields:
            own[row.key] = values[row.key]
        else:
            extra[row.key] = values[row.key]
    config = Config(
        src=storages["src"], dest=storages["dest"],
        restore=storages["restore"] or StorageConfig(local_path=DEFAULT_RESTORE),
        **{name: make(**parts[name]) for name, make in _PARTS.items()}, **own, extra=extra)
    if check.problems:
        raise ConfigError("configuration problems:\n  " + "\n  ".join(check.problems))
    return config, warnings


def restore_storage(config: Config, requests: int = 0) -> Storage:
    """Where a restore writes: the restore section's storage, confined to its root, private
    or not as restore_permissions says; the default folder must be one of this user's."""
    return make_storage(config.restore, confined=True, requests=requests,
                        private=config.restore_permissions == "private",
                        owned=config.restore.local_path == DEFAULT_RESTORE)


def archive_warnings(config: Config) -> list[str]:
    """What a backup cannot do with an archive storage_class for dest: S3 copies (renames)
    an archived object only once it is thawed, and the settings that need renames say so
    (a deletion needs none: a mark records it, see apply_marks)."""
    chosen = ((config.dest and config.dest.storage_class) or "").strip().upper()
    if chosen not in ARCHIVE_CLASSES:
        return []
    refuses = f"dest.storage_class is {chosen}, whose objects S3 cannot rename (copy)"
    warnings = []
    if config.versions_keep_days:
        warnings.append(
            f"{refuses}: a changed file's old object cannot be kept as a version and is "
            "removed; set versions_keep_days to 0 (environment VERSIONS_KEEP_DAYS) if that "
            "is wanted, or use storage_class GLACIER_IR to keep history")
    return warnings


def alerts_anyway(path: Optional[str], environ: Optional[dict[str, str]] = None) -> Alerts:
    """The alert settings of a configuration that does not load, as far as they are valid
    themselves: a configuration error still reaches the monitors that can be known."""
    environ = dict(os.environ if environ is None else environ)
    rows = [row for row in SETTINGS if row.into.startswith("alerts.")]
    try:
        raw, _ = read_raw_config(path, environ)
    except ConfigError:      # the file is unreadable: the environment alone
        raw = {row.key: environ[row.env] for row in rows if environ.get(row.env, "").strip()}
    values = read_settings(_Checker(raw), rows)
    return Alerts(**{row.into.split(".")[1]: values[row.key] for row in rows})


# =====================================================================================
# Jobs: what a worker does for one file, and the Outcome it reports
# =====================================================================================
#
# The planner makes jobs, the driver hands them to worker processes in Batches, and every
# job comes back as one Outcome.  Each job kind names itself: its ``action`` and ``path``
# (for its Outcome and the dry-run plan), the storages it ``touches`` and the one it
# ``writes`` to, by their role in the configuration ("src", "dest", "restore"), the ``size``
# of the file it carries (small files are batched), and what the request scheduler does for
# it on a remote destination (``scheduling``: "store" what a worker encoded, "fetch" what a
# worker decodes, make the "request" itself, or "remove" in groups).

SMALL_FILE = 1024 * 1024          # bytes; larger files are written (and flushed) alone


class Stored(NamedTuple):
    """One backup object on the destination and what its name says.

    ``key`` gives the object's key.  Most keys are the name's own plaintext form, and
    those are not kept but rebuilt when asked for: at a million objects that saves about
    110 MB.  ``object_key`` is the key when it is anything else (an encrypted name, or a
    plaintext one written in a form ours would not write).
    """

    object_key: Optional[str]
    size: int             # bytes of the object
    name: BackupName
    storage_class: str = ""   # the listing's, when not STANDARD
    modified: int = 0         # the listing's LastModified (epoch seconds); 0: not known

    @property
    def key(self) -> str:
        if self.object_key is not None:
            return self.object_key
        return format_plain_name(self.name) + name_suffix(self.name)


def stored_object(key: str, size: int, name: BackupName, storage_class: str = "",
                  modified: int = 0) -> Stored:
    """A Stored that keeps its key only when the name's plaintext form does not give it."""
    return Stored(None if is_canonical_key(key, name) else key, size, name, storage_class, modified)


def is_archived(obj: Stored) -> bool:
    """Whether the object is in an archive class: not readable, nor renamable, unthawed."""
    return obj.storage_class in ARCHIVE_CLASSES


@dataclass(frozen=True)
class _ObjectJob:
    """A job on one backup object, ``old``, whose action is why it is done."""

    old: Stored
    size: ClassVar[int] = 0
    touches: ClassVar[tuple[str, ...]] = ("dest",)
    writes: ClassVar[Optional[str]] = "dest"
    scheduling: ClassVar[str] = "request"

    @property
    def action(self) -> str:
        return self.why      # type: ignore[attr-defined]  # (every subclass has one)

    @property
    def path(self) -> str:
        return self.old.name.path


@dataclass(frozen=True)
class Rename(_ObjectJob):
    """Give an object a new name: "mark deleted" (its file is gone), "undelete", or "keep
    version" (history)."""

    name: BackupName
    why: str


@dataclass(frozen=True)
class Mark(_ObjectJob):
    """Write the deletion mark ``name`` (empty) of an object that cannot be renamed (an
    archived one) because its file is gone: "mark deleted"."""

    name: BackupName
    why: str


@dataclass(frozen=True)
class Remove(_ObjectJob):
    """Delete an object: "expire" (deleted long enough ago), "expire version",
    "duplicate", or a deletion mark: "undelete" (its file is back) or "drop mark" (its
    object is gone, or goes)."""

    why: str
    scheduling: ClassVar[str] = "remove"


@dataclass(frozen=True)
class Extend(_ObjectJob):
    """Lock an unchanged object (Object Lock) until ``until`` (epoch seconds): its lock
    ends soon (see ObjectLock.due)."""

    until: int
    why: ClassVar[str] = "extend lock"


@dataclass(frozen=True)
class Upload:
    """Back up a new or changed source file.  Once the new object is durable, the objects
    it ``replaces`` are removed, and those of its ``versions`` (with history) are renamed
    to version objects, or removed when the new content turns out to be the same."""

    path: str
    size: int
    mtime: int
    replaces: tuple[str, ...] = ()
    versions: tuple[Rename, ...] = ()
    action: ClassVar[str] = "upload"
    scheduling: ClassVar[str] = "store"
    touches: ClassVar[tuple[str, ...]] = ("src", "dest")
    writes: ClassVar[Optional[str]] = "dest"


@dataclass(frozen=True)
class _ContentJob:
    """A job that reads one backup object's content, ``obj``."""

    obj: Stored
    scheduling: ClassVar[str] = "fetch"

    @property
    def path(self) -> str:
        return self.obj.name.path

    @property
    def size(self) -> int:
        return self.obj.name.size


@dataclass(frozen=True)
class Restore(_ContentJob):
    """Decode an object into its file under the restore storage."""

    action: ClassVar[str] = "restore"
    touches: ClassVar[tuple[str, ...]] = ("dest", "restore")
    writes: ClassVar[Optional[str]] = "restore"


@dataclass(frozen=True)
class Verify(_ContentJob):
    """Decode an object and check it, keeping nothing."""

    action: ClassVar[str] = "verify"
    touches: ClassVar[tuple[str, ...]] = ("dest",)
    writes: ClassVar[Optional[str]] = None


Job = Union[Upload, Rename, Mark, Remove, Extend, Restore, Verify]


@dataclass(frozen=True)
class Batch:
    """What the worker pool runs: one job, or small-file jobs of one kind run together
    (``grouped``), so that one flush makes what they wrote durable and, on a remote
    storage, their requests overlap on a few threads."""

    jobs: tuple[Job, ...]
    grouped: bool = False


@dataclass(frozen=True)
class Outcome:
    action: str               # the job's action
    path: str
    error: str = ""           # empty on success
    bytes_in: int = 0
    bytes_out: int = 0
    key: str = ""             # the key written: an upload's new object, a restored file
    warning: str = ""         # done, but something to tell (reported, not a failure)
    md5: bytes = b""          # an upload's content digest
    versions: int = 0         # old objects an upload kept as versions
    damaged: str = ""         # the key of an object read that failed its checks
                              # (IntegrityError): what --verify --repair makes again


# =====================================================================================
# Planner: what a backup run must do, as a pure function of the two listings
# =====================================================================================

@dataclass
class Plan:
    uploads: list[Upload] = field(default_factory=list)
    renames: list[Rename] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    removes: list[Remove] = field(default_factory=list)
    extends: list[Extend] = field(default_factory=list)   # unchanged objects whose Object
                                       # Lock ends soon
    unchanged: int = 0
    live: int = 0                      # paths with a live object before the run
    vanishing: int = 0                 # of those, how many this run marks deleted or removes
    changed: int = 0                   # of those, how many this run replaces (uploads)
    objects: int = 0                   # backup and version objects listed on the destination
    object_bytes: int = 0              # ... and their sizes
    replaced: dict[str, tuple[int, int]] = field(default_factory=dict)   # path of an upload:
                                       # the objects (count, bytes) it replaces
    unkept: int = 0                    # old contents history would keep as versions, but
                                       # archived (no rename): removed instead
    expiring: int = 0                  # deleted files whose objects expire in this run
    outliving: int = 0                 # versions kept longer than versions_keep_days says (by
                                       # their own days; --expire-versions removes them)
    candidates: list[Stored] = field(default_factory=list, compare=False)   # the objects
                                       # the password is tried on (see Candidates)


def today() -> datetime.date:
    """The run's local date (a function, so tests can move the calendar)."""
    return datetime.date.today()


def now() -> int:
    """The run's moment, epoch seconds (a function, like today())."""
    return int(time.time())


def day_start(day: int) -> Optional[int]:
    """The epoch second (local time) a YYYYMMDD day starts at; None when it is no date."""
    try:
        return int(datetime.datetime(day // 10000, day // 100 % 100, day % 100).timestamp())
    except (ValueError, OverflowError, OSError):
        return None


def noon(day: datetime.date) -> int:
    """The epoch second of a day's noon, local time: the moment of a plan made for a day."""
    return int(datetime.datetime.combine(day, datetime.time(12)).timestamp())


def date_number(day: datetime.date) -> int:
    """2026-11-26 -> 20261126, the deleted field's value."""
    return day.year * 10000 + day.month * 100 + day.day


def expired(deleted: int, today: datetime.date, keep_days: Optional[int]) -> bool:
    """A deleted object expires keep_days after its deletion date (None: never)."""
    if keep_days is None:
        return False
    try:
        since = datetime.date(deleted // 10000, deleted // 100 % 100, deleted % 100)
    except (ValueError, OverflowError):
        return False   # not a date we wrote: keep it rather than guess
    return (today - since).days >= keep_days


def replaced_on(name: BackupName) -> int:
    """The YYYYMMDD a version was replaced on (from its stamp, or its day), 0 if unknown."""
    stamp = read_stamp(name.deleted)
    if stamp is None:
        return name.deleted
    try:
        return date_number(datetime.date.fromtimestamp(stamp[0]))
    except (ValueError, OverflowError, OSError):
        return 0


def version_expired(name: BackupName, today: datetime.date, history: int,
                    strict: bool = False) -> bool:
    """Whether a version object is due for removal.  It is kept for the days of its stamp
    or versions_keep_days (``history``) now, whichever is longer: a lowered setting, or
    history turned off, never removes what was kept under a longer one.  A version from
    before stamps has no days of its own: it follows ``history``, and is kept while history
    is off.  ``strict`` (--expire-versions) applies ``history`` to every version."""
    stamp = read_stamp(name.deleted)
    if strict:
        days: Optional[int] = history
    elif stamp is not None:
        days = max(stamp[1], history)
    else:
        days = history or None
    day = replaced_on(name)
    return day != 0 and expired(day, today, days)


def current_at(name: BackupName, as_of: "AsOf") -> bool:
    """Whether the object was still its file's current one at ``as_of``, as far as its name
    tells: live; a version replaced after that moment (its stamp has the second); a deleted
    object (or a version from before stamps) gone on a later day, since its date has the day
    only: an object deleted on a day counts as gone for all of that day."""
    if not name.deleted:
        return True
    stamp = read_stamp(name.deleted) if name.version else None
    if stamp is not None:
        return stamp[0] > as_of.moment
    return name.deleted > as_of.day


def gone_moment(name: BackupName) -> int:
    """An order for when objects stopped being current (0 while live): the stamp's second,
    else the start of the deletion day."""
    stamp = read_stamp(name.deleted) if name.version else None
    if stamp is not None:
        return stamp[0]
    return (day_start(name.deleted) or 0) if name.deleted else 0


def apply_marks(group: list[Stored]) -> tuple[list[Stored], dict[str, Stored], list[Stored]]:
    """A path's objects with its deletion marks (".del") applied: a live object that a mark
    names (the same mtime, size and MD5; the earliest date if several do) is read as
    deleted on the mark's date, under its own key.  Returns the objects (marks left out),
    each marked object's mark by the object's key, and the marks that name no live object
    (left over: to be removed).  A mark applies to one object at most."""
    marks = [o for o in group if o.name.mark]
    if not marks:
        return group, {}, []
    objects, applied, used = [], {}, set()
    for obj in group:
        name = obj.name
        if name.mark:
            continue
        if not name.deleted and not name.version:
            mine = [m for m in marks if m.name.deleted and m.key not in used
                    and (m.name.mtime, m.name.size, m.name.md5) == name[1:4]]
            if mine:
                mark = min(mine, key=lambda m: (m.name.deleted, m.key))
                applied[obj.key] = mark
                used.add(mark.key)
                obj = Stored(obj.key, obj.size, name.with_deleted(mark.name.deleted),
                             obj.storage_class)
        objects.append(obj)
    return objects, applied, [m for m in marks if m.key not in used]


def _same_file(name: BackupName, entry: Entry) -> bool:
    return name.size == entry.size and name.mtime == entry.mtime


def pick_keeper(objects: list[Stored], entry: Optional[Entry]) -> Stored:
    """Of several objects for one path: the one matching the source file, else the live one,
    else the latest deleted one (newest mtime breaks ties)."""
    def rank(obj: Stored) -> tuple:
        n = obj.name
        return (entry is not None and _same_file(n, entry), n.deleted == 0, n.deleted, n.mtime,
                obj.key)
    return max(objects, key=rank)


class BlindSpots:
    """What a listing could not read: keys of files, and folders ending in "/" ("/" is the
    whole storage).  A path is in a blind spot when it is one of those files or lies under
    one of those folders: looked up by the path's own folders, whatever the number of
    spots.  Reads ``spots`` as it grows: a listing still going on may add to it."""

    def __init__(self, spots: Iterable[str] = ()):
        self.spots = spots if isinstance(spots, list) else list(spots)
        self.taken = 0
        self.files: set[str] = set()
        self.folders: set[str] = set()

    def __contains__(self, path: str) -> bool:
        if self.taken < len(self.spots):
            for spot in self.spots[self.taken:]:
                (self.folders if spot.endswith("/") else self.files).add(spot)
            self.taken = len(self.spots)
        if path in self.files:
            return True
        if self.folders:
            if "/" in self.folders:
                return True
            cut = path.find("/")
            while cut >= 0:
                if path[:cut + 1] in self.folders:
                    return True
                cut = path.find("/", cut + 1)
        return False


PASSWORD_CANDIDATES = 6   # objects kept to try the password on before a run writes, the
                          # smallest and as many of the oldest (Candidates) ...
PASSWORD_TRIES = 6        # ... of which this many failing, none authenticating, prove it wrong
                          # (all of them: an attacker's junk under a few of the smallest
                          # names must not pass for a wrong password)
CANDIDATE_MIN = SALT_LEN + min(NONCE_LEN.values()) + TAG_LEN   # bytes; an object no larger
                          # than the smallest header holds nothing: damage, not worth a try


PASSWORD_READ_MAX = 8 * 1024 * 1024   # bytes; a larger object is not read to try the
                                      # password on (a backup would download it every run)


def _keep_best(heap: list, item: tuple, rank: int) -> bool:
    """Keep ``item`` among the PASSWORD_CANDIDATES best in ``heap`` (a min-heap, the worst
    kept on top), compared by its first ``rank`` fields; whether it was kept."""
    if len(heap) < PASSWORD_CANDIDATES:
        heapq.heappush(heap, item)
    elif item[:rank] > heap[0][:rank]:
        heapq.heapreplace(heap, item)
    else:
        return False
    return True


class Candidates:
    """The objects a run tries the password on before it writes anything (check_password),
    from every listed object ``offer``ed, in bounded memory, among those that can be read
    (not archived, larger than a header): the PASSWORD_CANDIDATES smallest, live ones
    first, and as many of the oldest (LastModified; at most PASSWORD_READ_MAX bytes).  The
    oldest are there because junk someone planted, or wrote over an object, is new: it
    can take every smallest place, never an oldest one while an older object is left.
    ``bound`` and ``early``: an object at least this large and at least this new cannot
    get in (checked before the call, for a million objects)."""

    def __init__(self) -> None:
        self.heap: list[tuple[bool, int, int, Stored]] = []   # (live, -size, -order, obj):
        self.bound: float = math.inf                         # the worst kept on top
        self.old: list[tuple[int, int, Stored]] = []         # (-modified, -order, obj): the
        self.early: float = math.inf                         # newest kept on top
        self.order = 0

    def offer(self, obj: Stored) -> None:
        if obj.size <= CANDIDATE_MIN or obj.storage_class in ARCHIVE_CLASSES:
            return
        self.order += 1
        if obj.size <= PASSWORD_READ_MAX:
            _keep_best(self.old, (-obj.modified, -self.order, obj), 2)
            if len(self.old) == PASSWORD_CANDIDATES:
                self.early = -self.old[0][0]
        item = (not (obj.name.deleted or obj.name.version), -obj.size, -self.order, obj)
        if not _keep_best(self.heap, item, 3):
            return
        if len(self.heap) == PASSWORD_CANDIDATES:
            live, minus_size = self.heap[0][:2]      # the worst kept: a live one is beaten
            self.bound = -minus_size if live else math.inf   # only by a smaller one

    def best(self) -> list[Stored]:
        """The candidates, the one to try first first: the smallest, then the oldest of
        the others, oldest first."""
        smallest = [item[3] for item in sorted(self.heap, reverse=True)]
        chosen = {id(obj) for obj in smallest}
        return smallest + [item[2] for item in sorted(self.old, reverse=True)
                           if id(item[2]) not in chosen]


class Planner:
    """The decisions of a backup run, one path at a time: ``file()`` is told each path's
    source file (or None) and its objects, the paths in any order; ``finish()`` gives the
    Plan, each list in the order of the paths.

    An object in an archive class (is_archived) cannot be renamed, so instead: the object
    of a file gone keeps its live name and gets a deletion mark (see apply_marks) unless
    ``keep_days`` is 0 (then it is removed, as any); a marked file that comes back
    unchanged loses its mark, and one that was renamed deleted is uploaded again (its
    archived object removed); an old content history would keep is removed
    (``unkept``)."""

    def __init__(self, today: datetime.date, keep_days: Optional[int],
                 versions_keep_days: int = 0, moment: Optional[int] = None,
                 expire_versions: bool = False, lock: Optional[ObjectLock] = None):
        self.plan, self.today, self.keep_days = Plan(), today, keep_days
        self.lock = lock
        self.stamp = date_number(today)
        self.versions_keep_days = max(0, versions_keep_days)     # (below 0: none)
        self.moment = noon(today) if moment is None else moment  # the run's start
        self.strict = expire_versions
        self.candidates = Candidates()

    def file(self, path: str, group: list[Stored], entry: Optional[Entry]) -> None:
        """Decide what becomes of one path: its file (None when the source has none) and
        every object of the path."""
        plan = self.plan
        if not group:
            if entry is not None:
                plan.uploads.append(Upload(path, entry.size, entry.mtime))
            return
        name = group[0].name
        if (len(group) == 1 and entry is not None and not name.deleted and not name.version
                and _same_file(name, entry)):
            plan.live += 1            # the common case, kept cheap for a million files
            plan.unchanged += 1
            if self.lock:
                self._extend(group[0])
            return
        if len(group) > 1:          # the same decisions in whichever order a listing came
            group = sorted(group, key=_object_key)
        self._judge(path, group, entry)

    def _extend(self, obj: Stored) -> None:
        """An Extend of an unchanged object whose Object Lock ends soon."""
        until = self.lock.due(obj.modified, self.moment) if self.lock else None
        if until is not None:
            self.plan.extends.append(Extend(obj, until))

    def replaced_stamp(self, deleted: int) -> int:
        """The stamp of a version made now of an object whose deleted field is ``deleted``:
        replaced at the run's start, or (a deleted object) at the start of its deletion day;
        a deletion date that is no date is kept as it is."""
        start = day_start(deleted) if deleted else self.moment
        if start is None or start * STAMP_DAYS < STAMP_MIN:
            return deleted
        return version_stamp(start, self.versions_keep_days)

    def _keep_or_drop(self, extras: Iterable[Stored], kept: set[bytes], why: str
                      ) -> tuple[list[Rename], list[Remove]]:
        """Objects leaving their ``.enc`` name: with history, kept as versions (replaced
        now, or when a deleted one was deleted) when no version of their content is
        ``kept`` already and the version would not be expired at once; else removed for
        ``why``."""
        renames, removes = [], []
        plan, history = self.plan, self.versions_keep_days
        for obj in extras:
            version = obj.name.as_version(self.replaced_stamp(obj.name.deleted)) \
                if history else obj.name
            wanted = history and obj.name.md5 not in kept and not version_expired(
                version, self.today, history)
            if wanted and not is_archived(obj):
                kept.add(obj.name.md5)
                renames.append(Rename(obj, version, "keep version"))
            else:
                plan.unkept += wanted
                removes.append(Remove(obj, why))
        return renames, removes

    def _judge(self, path: str, group: list[Stored], entry: Optional[Entry]) -> None:
        plan, today, history = self.plan, self.today, self.versions_keep_days
        group, marks, stale = apply_marks(group)
        plan.removes += [Remove(mark, "drop mark") for mark in stale]

        def unmark(objects: Iterable[Stored], why: str = "drop mark") -> list[Remove]:
            """The removals of the marks of ``objects`` (which leave their keys)."""
            return [Remove(marks.pop(o.key), why) for o in objects if o.key in marks]

        current = [o for o in group if not o.name.version]
        kept: set[bytes] = set()
        for version in (o for o in group if o.name.version):
            if version_expired(version.name, today, history, self.strict):
                plan.removes.append(Remove(version, "expire version"))
            else:
                kept.add(version.name.md5)
                plan.outliving += version_expired(version.name, today, history, True)
        if not current:
            if entry is not None:
                plan.uploads.append(Upload(path, entry.size, entry.mtime))
            return
        keeper = pick_keeper(current, entry)
        others = [o for o in current if o is not keeper]
        name = keeper.name
        live = any(o.name.deleted == 0 for o in current)
        plan.live += live
        if entry is not None and not _same_file(name, entry):
            plan.changed += live
            renames, removes = self._keep_or_drop([keeper, *others], kept, "replace")
            removes += unmark([keeper, *others])    # (removed once the new object is safe)
            plan.uploads.append(Upload(path, entry.size, entry.mtime,
                                       tuple(o.old.key for o in removes), tuple(renames)))
            if removes:
                plan.replaced[path] = len(removes), sum(o.old.size for o in removes)
            return
        if entry is not None:
            if name.deleted and keeper.key in marks:    # back as it was: its mark goes
                plan.removes += unmark([keeper], "undelete")
            elif name.deleted and is_archived(keeper):    # no rename back: upload it again
                plan.uploads.append(Upload(path, entry.size, entry.mtime, (keeper.key,)))
                plan.replaced[path] = 1, keeper.size
            elif name.deleted:
                plan.renames.append(Rename(keeper, name.with_deleted(0), "undelete"))
            else:
                plan.unchanged += 1
                if self.lock:
                    self._extend(keeper)
        elif name.deleted == 0:
            marked = name.with_deleted(self.stamp)
            copy = min((o for o in others if o.name == marked), key=_object_key, default=None)
            plan.vanishing += 1
            if self.keep_days == 0:
                plan.removes.append(Remove(keeper, "expire"))
            elif copy is not None:     # a run stopped in this very rename left its copy: the
                others = [o for o in others if o is not copy] + [keeper]   # live one goes
            elif is_archived(keeper):  # no rename: a mark says it
                plan.marks.append(Mark(keeper, marked._replace(mark=True), "mark deleted"))
            else:
                plan.renames.append(Rename(keeper, marked, "mark deleted"))
        elif expired(name.deleted, today, self.keep_days):
            plan.removes += [Remove(keeper, "expire"), *unmark([keeper])]
            plan.expiring += 1
        renames, removes = self._keep_or_drop(others, kept | {name.md5}, "duplicate")
        plan.renames += renames
        plan.removes += removes + unmark(others)

    def finish(self) -> Plan:
        plan = self.plan
        plan.candidates = self.candidates.best()
        for jobs in (plan.uploads, plan.renames, plan.marks, plan.removes, plan.extends):
            jobs.sort(key=_job_path)      # stable: a path's own jobs keep their order
        return plan


def _job_path(job: Job) -> str:
    return job.path


def _entry_path(entry: Entry) -> str:
    return entry.key


def _stored_path(obj: Stored) -> str:
    return obj.name.path


def _object_key(obj: Stored) -> str:
    return obj.key


def plan_key(path: str) -> str:
    """Where a path comes in plan order: ascending path + ".".  An object's key is its
    path, a ".", and the name's fields: in this order the objects of a path come nearly
    where a listing in key order has them (see in_plan_order)."""
    return path + "."


def plan_backup(source: Iterable[Entry], stored: Iterable[Stored], today: datetime.date,
                keep_days: Optional[int], blind: Iterable[str] = (),
                versions_keep_days: int = 0, moment: Optional[int] = None,
                expire_versions: bool = False, lock: Optional[ObjectLock] = None) -> Plan:
    """Compare the source listing with the destination's objects and decide every action.

    Objects of paths in ``blind`` (unreadable files and folders; a list may still grow
    while an ordered walk goes on) are left as they are.  With ``versions_keep_days``
    (history), what a change or a crash would remove is kept as a version object unless a
    version of the same content is kept already, stamped with ``moment`` (the run's start;
    noon of ``today`` when None) and the days it is kept; versions expire as
    version_expired says (``expire_versions``: by versions_keep_days alone).  With
    ``lock`` (object_lock_*), unchanged objects whose lock ends soon are extended.

    Both listings are sorted by path and walked side by side (see plan_walked).
    """
    files = ((e.key, e) for e in sorted(source, key=_entry_path))
    objects = ((o.name.path, o) for o in sorted(stored, key=_stored_path))
    return plan_walked(files, objects, today, keep_days, blind, versions_keep_days, moment,
                       expire_versions, lock)


def plan_walked(files: Iterable[tuple[str, Entry]], objects: Iterable[tuple[str, Stored]],
                today: datetime.date, keep_days: Optional[int], blind: Iterable[str] = (),
                versions_keep_days: int = 0, moment: Optional[int] = None,
                expire_versions: bool = False, lock: Optional[ObjectLock] = None) -> Plan:
    """plan_backup of listings that come as (plan key, item) in plan order (see plan_key
    and in_plan_order): walked as they come, neither held (at a million files, the
    difference between a few megabytes and hundreds)."""
    return walk_listings(files, objects, Planner(today, keep_days, versions_keep_days, moment,
                                                 expire_versions, lock), BlindSpots(blind))


def walk_listings(files: Iterable[tuple[str, Entry]], objects: Iterable[tuple[str, Stored]],
                  planner: Planner, blind: BlindSpots) -> Plan:
    """The planner's walk: ``files`` and ``objects`` as (sort key, item), in ascending
    order of a sort key that a file and the objects of its path share.  A path's objects
    are decided once the file listing has gone past them, so a blind spot the listing
    finds on its way is known by then."""
    after = iter(objects)
    head = next(after, None)

    def take(key: str) -> list[Stored]:
        """The objects of the next sort key (``key``), now decided by the caller."""
        nonlocal head
        group = []
        while head is not None and head[0] == key:
            group.append(head[1])
            head = next(after, None)
        return group

    plan, file, candidates = planner.plan, planner.file, planner.candidates

    def decide(path: str, group: list[Stored], entry: Optional[Entry]) -> None:
        plan.objects += len(group)
        for obj in group:
            plan.object_bytes += obj.size
            if obj.size < candidates.bound or obj.modified < candidates.early:
                candidates.offer(obj)
        file(path, [] if group and blind.spots and path in blind else group, entry)

    for key, entry in files:
        while head is not None and head[0] < key:        # their files are gone
            group = take(head[0])
            decide(group[0].name.path, group, None)
        decide(entry.key, take(key) if head is not None and head[0] == key else [], entry)
    while head is not None:
        group = take(head[0])
        decide(group[0].name.path, group, None)
    return planner.finish()


MASS_DELETE_MIN = 10     # files; fewer vanishing (or changed) files never trigger a guard


def is_mass(count: int, live: int) -> bool:
    """More than half of the live backed-up files, and more than MASS_DELETE_MIN."""
    return count > MASS_DELETE_MIN and count * 2 > live


def check_mass_delete(plan: Plan) -> None:
    """Refuse a run that would retire more than half of the live files (and more than 10),
    or remove the objects of that many deleted files at once (deleted_keep_days lowered)."""
    if is_mass(plan.vanishing, plan.live):
        raise RefusedError(
            f"refusing to mark deleted or remove {plan.vanishing} of {plan.live} backed-up "
            "files: the source looks empty or unmounted. If they really were deleted, run "
            "again with --allow-mass-delete")
    if is_mass(plan.expiring, plan.live):
        raise RefusedError(
            f"refusing to remove the objects of {plan.expiring} deleted files at once (more "
            f"than half of the {plan.live} live ones): deleted_keep_days expires them all now. "
            "If it was lowered by mistake, set it back; if they should go, run again with "
            "--allow-mass-delete")


def check_mass_change(plan: Plan, history: bool = False) -> None:
    """Refuse a run that would replace more than half of the live files' only copies (and
    more than 10): every changed file's without history, with history those whose old
    object is archived (``unkept``: it cannot become a version)."""
    if history and is_mass(plan.unkept, plan.live):
        raise RefusedError(
            f"refusing to replace {plan.unkept} of {plan.live} backed-up files whose old "
            "copies are in an archive storage class, which cannot be kept as versions (no "
            "rename there): that many changed at once looks like files encrypted or rewritten "
            "in place (ransomware, a broken script). If the changes are wanted, run again "
            "with --allow-mass-change")
    if not history and is_mass(plan.changed, plan.live):
        raise RefusedError(
            f"refusing to replace {plan.changed} of {plan.live} backed-up files: that many "
            "changed at once looks like files encrypted or rewritten in place (ransomware, "
            "a broken script), and without history their old copies would be gone. If the "
            "changes are wanted, run again with --allow-mass-change; to keep the old copies, "
            "set versions_keep_days")


def matches_only(path: str, only: tuple[str, ...]) -> bool:
    """True with no patterns, or when ``path`` equals, lies under (a folder) or matches (a
    glob) one of them."""
    import fnmatch
    return not only or any(path == p or path.startswith(p.rstrip("/") + "/") or
                           fnmatch.fnmatchcase(path, p) for p in only)


class AsOf(NamedTuple):
    """A moment to restore the state of: its local day (YYYYMMDD) and epoch second."""

    day: int
    moment: int


AS_OF_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M")


def parse_as_of(text: str) -> AsOf:
    """``YYYY-MM-DD`` (the end of that day) or ``YYYY-MM-DDTHH:MM[:SS]``, local time.
    ValueError with the message for the user when it is neither."""
    text = text.strip()
    when = None
    for pattern in ("%Y-%m-%d", *AS_OF_FORMATS):
        with contextlib.suppress(ValueError):
            when = datetime.datetime.strptime(text, pattern)
            if pattern == "%Y-%m-%d":
                when = when.replace(hour=23, minute=59, second=59)
            break
    if when is None:
        raise ValueError(f"{text!r} is not a date: use YYYY-MM-DD (the end of that day) or "
                         "YYYY-MM-DDTHH:MM[:SS], in local time")
    try:
        moment = int(when.timestamp())
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{text!r} is outside the dates this system can handle") from None
    return AsOf(date_number(when.date()), moment)


def state_at(objects: list[Stored], as_of: AsOf) -> Optional[Stored]:
    """The object of one path that was current at ``as_of``, or None when the file did not
    exist then (as far as the backup knows): of its objects still current then
    (current_at: a version knows the second it was replaced, a deletion only the day) and
    not written after that moment (an object counts from its file's mtime), the one with
    the latest mtime."""
    then = [o for o in objects if current_at(o.name, as_of) and o.name.mtime <= as_of.moment]
    if not then:
        return None
    return max(then, key=lambda o: (o.name.mtime, o.name.deleted == 0, gone_moment(o.name),
                                    not o.name.version, o.key))


def by_path(stored: Iterable[Stored]) -> dict[str, list[Stored]]:
    """Objects grouped by the path they belong to."""
    groups: dict[str, list[Stored]] = {}
    for obj in stored:
        groups.setdefault(obj.name.path, []).append(obj)
    return groups


def select_for_restore(stored: Iterable[Stored], include_deleted: bool,
                       only: tuple[str, ...] = (), as_of: Optional[AsOf] = None
                       ) -> list[Stored]:
    """One object per path: the live one, else (with include_deleted) the latest deleted;
    with ``as_of``, the one current then (see state_at); only paths matching ``only``.
    Deletion marks count (apply_marks)."""
    chosen = []
    for path, objects in sorted(by_path(stored).items()):
        if not matches_only(path, only):
            continue
        objects = apply_marks(objects)[0]
        if as_of is not None:
            then = state_at(objects, as_of)
            if then is not None:
                chosen.append(then)
            continue
        current = [o for o in objects if not o.name.version]
        if not current:
            continue
        keeper = current[0] if len(current) == 1 else pick_keeper(current, None)
        if keeper.name.deleted == 0 or include_deleted:
            chosen.append(keeper)
    return chosen


SUGGESTIONS = 3          # paths a filter that matches nothing suggests, at most


def near_misses(paths: Iterable[str], pattern: str) -> list[str]:
    """What a --restore-only ``pattern`` that matches none of ``paths`` may have meant: the
    paths (or folders) it matches with its case ignored and its leading "/" or "./"
    removed, sorted, at most SUGGESTIONS of them."""
    import fnmatch
    bare = re.sub(r"^(\./|/)+", "", pattern).rstrip("/").lower()
    found: set[str] = set()
    if not bare:
        return []
    for path in paths:
        folded = path.lower()
        if folded == bare or fnmatch.fnmatchcase(folded, bare):
            found.add(path)
        elif folded.startswith(bare + "/"):
            found.add(path[:len(bare)])
    return sorted(found)[:SUGGESTIONS]


def check_selection(stored: list[Stored], chosen: list[Stored], only: tuple[str, ...],
                    as_of: Optional[AsOf], as_of_text: str = "", deleted_option: str = ""
                    ) -> None:
    """NothingSelectedError when a restore or list with ``only`` patterns and ``as_of``
    would select nothing, or a pattern matches no path at all (a typo must not pass as a
    restore of "0 files"): naming the pattern and the paths it may have meant (see
    near_misses), the earliest moment the backup knows, or the option that would include
    deleted files (``deleted_option``: empty when there is none).  ``stored`` is not
    empty (see open_backup)."""
    missing = [p for p in only if not any(matches_only(o.name.path, (p,)) for o in stored)]
    if missing:
        said = []
        for pattern in missing:
            near = near_misses((o.name.path for o in stored), pattern)
            said.append(f"--restore-only {pattern!r} matches no path in the backup" + (
                f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""))
        raise NothingSelectedError("; ".join(said) + ": paths are relative to the backed-up "
                                   "folder, without a leading '/', and case counts; "
                                   "--list shows them")
    if chosen:
        return
    matching = [o for o in stored if matches_only(o.name.path, only)]
    which = f" under --restore-only {', '.join(repr(p) for p in only)}" if only else ""
    if as_of is not None:
        first = min(o.name.mtime for o in matching)
        when = datetime.datetime.fromtimestamp(first).strftime("%Y-%m-%dT%H:%M:%S") \
            if first < 2 ** 37 else str(first)
        if first > as_of.moment:
            raise NothingSelectedError(
                f"no file{which} existed as of {as_of_text or as_of.moment}, as far as the "
                f"backup knows: its earliest file is from {when}; give --as-of that moment or "
                "later")
        raise NothingSelectedError(
            f"no file{which} was there as of {as_of_text or as_of.moment}: each was deleted "
            "by then or written later; --list --versions shows every object with its dates")
    if any(o.name.deleted and not o.name.version for o in matching) and deleted_option:
        raise NothingSelectedError(f"every file{which} is marked deleted in the backup; add "
                                   f"{deleted_option} to restore them")
    raise NothingSelectedError(f"no file{which} has a current object in the backup, only "
                               "old versions: --list --versions shows them, --as-of restores "
                               "one")


class Subset(NamedTuple):
    """The share of the paths a run handles: slice ``part`` of ``parts`` ("I/N", --slice, or
    --verify --subset), or, --subset only, ``percent`` of the objects picked at random
    ("P%").  ``via``: the scheduler's variable an ``auto/N`` slice took its index from."""

    part: int = 0
    parts: int = 0
    percent: float = 0.0
    via: str = ""

    def __str__(self) -> str:
        return f"{self.part}/{self.parts}" if self.parts else f"{self.percent:g}%"

    def owns(self, path: str) -> bool:
        """Whether ``path`` (a plaintext path) falls in this slice (see key_slice)."""
        return key_slice(path, self.parts) == self.part - 1


def parse_subset(text: str) -> Subset:
    """``N/T`` (1 <= N <= T) or ``P%`` (0 < P <= 100).  ValueError with the message for the
    user when it is neither."""
    text = text.strip()
    slice_match = re.fullmatch(r"(\d+)\s*/\s*(\d+)", text)
    if slice_match and 1 <= int(slice_match[1]) <= int(slice_match[2]):
        return Subset(part=int(slice_match[1]), parts=int(slice_match[2]))
    percent_match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)\s*%", text)
    if percent_match and 0 < float(percent_match[1]) <= 100:
        return Subset(percent=float(percent_match[1]))
    raise ValueError(f"{text!r} is neither a slice N/T with 1 <= N <= T (e.g. 3/7) nor a "
                     "percentage P% with 0 < P <= 100 (e.g. 10%)")


# The schedulers' own index of a job array's task (Kubernetes Indexed Job, AWS Batch array
# job: from 0; Slurm: SLURM_ARRAY_TASK_ID, less SLURM_ARRAY_TASK_MIN), for --slice auto/N
SLICE_VARIABLES = ("JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX", "SLURM_ARRAY_TASK_ID")


def parse_slice(text: str, environ: Optional[dict[str, str]] = None) -> Subset:
    """--slice: ``I/N`` (1 <= I <= N), or ``auto/N``, I one more than the index the job
    array's scheduler gives the task (SLICE_VARIABLES, the first one set).  ValueError with
    the message for the user otherwise."""
    environ = dict(os.environ) if environ is None else environ
    match = re.fullmatch(r"\s*(\w+)\s*/\s*(\d+)\s*", text)
    if not match or not (match[1].isdigit() or match[1] == "auto") or int(match[2]) < 1:
        raise ValueError(f"{text!r} is not I/N with 1 <= I <= N (e.g. 2/3) nor auto/N (e.g. "
                         "auto/3: I from the job array's index)")
    parts = int(match[2])
    if match[1].isdigit():
        if not 1 <= int(match[1]) <= parts:
            raise ValueError(f"{text!r}: slice {int(match[1])} of {parts} does not exist; I "
                             f"counts from 1 to N (1/{parts} to {parts}/{parts})")
        return Subset(part=int(match[1]), parts=parts)
    via = next((name for name in SLICE_VARIABLES if environ.get(name, "").strip()), "")
    if not via:
        raise ValueError(f"auto/{parts}: no job array index is set ("
                         f"{', '.join(SLICE_VARIABLES)}); give the slice as I/{parts}")
    value = environ[via].strip()
    base = environ.get("SLURM_ARRAY_TASK_MIN", "0").strip() \
        if via == "SLURM_ARRAY_TASK_ID" else "0"
    if not (value.isdigit() and base.isdigit()) or not 0 <= int(value) - int(base) < parts:
        raise ValueError(f"auto/{parts}: {via}={value!r}"
                         + (f" (less SLURM_ARRAY_TASK_MIN={base!r})" if base != "0" else "")
                         + f" is not an index from 0 to {parts - 1}; run {parts} tasks "
                         f"numbered from 0, or make N the job array's size")
    return Subset(part=int(value) - int(base) + 1, parts=parts, via=via)


def key_slice(key: str, parts: int) -> int:
    """The slice (0 to parts - 1) a path (or an object key) falls in: the same on every run,
    machine and Python version, since it comes from the first 8 bytes of the SHA-256 of its
    UTF-8 (not from Python's salted hash()), read big-endian, modulo ``parts``."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % parts


def select_subset(objects: list[Stored], subset: Subset) -> list[Stored]:
    """The objects a verify of ``subset`` checks, in their order: those of its slice (by
    path, so a path's objects are in one slice), or a random sample of its percentage
    (rounded up, so at least one of a non-empty list)."""
    if subset.parts:
        return [o for o in objects if subset.owns(o.name.path)]
    import random
    count = min(len(objects), math.ceil(len(objects) * subset.percent / 100))
    chosen = set(random.sample(range(len(objects)), count))
    return [o for i, o in enumerate(objects) if i in chosen]


_UNSAFE_PATH_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def safe_relpath(path: str) -> str:
    """The path itself when it stays inside a restore root; UnsafePathError otherwise."""
    parts = path.split("/")
    if (path.startswith("/") or any(p in ("", ".", "..") for p in parts)
            or _UNSAFE_PATH_CHARS.search(path)):
        raise UnsafePathError(f"refusing to restore {path!r}: the path is absolute, has empty, "
                              "'.' or '..' parts, or control characters, so it could leave "
                              "the restore folder")
    return path


# =====================================================================================
# Listings: what the planner walks, in plan order as it is listed, or held as columns
# =====================================================================================
#
# Where a storage lists in key order (Storage.ordered), a backup walks both listings as
# they come: in_plan_order turns key order into plan order (see plan_key) with a buffer of
# a few entries, and nothing holds a whole listing.  Where a listing cannot come in order
# (encrypted names, or a service that turns out to list otherwise) it is held as a
# Listing, in compact columns, and sorted.

SORT_RUN = 1 << 20          # entries sorted at a time when a Listing is put in order: the
                            # sort's own memory (about 100 bytes an entry) stays bounded


class OutOfOrder(Exception):
    """A listing that should have come in key order did not (``side``: "src" or "dest"):
    the run lists it again into a Listing, which it sorts itself."""

    def __init__(self, side: str):
        super().__init__(side)
        self.side = side


def in_plan_order(items: Iterable[tuple[str, str, R]], side: str
                  ) -> Iterator[tuple[str, R]]:
    """The items of a listing in key order, each given as (bound, plan key, item), as
    (plan key, item) in ascending order of their plan keys (equal plan keys in the order
    they came).

    An item waits in a heap until an item comes whose ``bound`` (the least plan key that
    anything listed after it can have) is past the waiting one's plan key.  What comes out
    is checked: when a listing was not in key order after all, OutOfOrder(side)."""
    pending: list[tuple[str, int, R]] = []
    push, pop = heapq.heappush, heapq.heappop
    last, count = "", 0
    for bound, key, item in items:
        while pending and pending[0][0] < bound:
            ready, _, done = pop(pending)
            if ready < last:
                raise OutOfOrder(side)
            last = ready
            yield ready, done
        count += 1
        push(pending, (key, count, item))
    while pending:
        ready, _, done = pop(pending)
        if ready < last:
            raise OutOfOrder(side)
        last = ready
        yield ready, done


def object_bound(key: str) -> str:
    """The least plan key an object listed after ``key`` (in key order) can have.  A later
    key is greater; the path it names can only sort before this object's when it is this
    key cut at a "." (the rest of the later key being the fields), so the least is this key
    up to its first "." that could end a path: not its first character, nor right after a
    "/" (no path of ours ends with "/"; a listing that has one is found out of order)."""
    dot = key.find(".", 1)
    while dot > 0 and key[dot - 1] == "/":
        dot = key.find(".", dot + 1)
    return key[:dot + 1] if dot > 0 else key


def listed_files(entries: Iterable[Entry]) -> Iterator[tuple[str, str, Entry]]:
    """(bound, plan key, entry) of source files listed in key order, for in_plan_order.
    A file's bound is its key: a file listed after it has a greater key, and a greater
    plan key still."""
    for entry in entries:
        yield entry.key, entry.key + ".", entry      # (plan_key, inlined: a million files)


def listed_objects(entries: Iterable[Entry], codec: Codec, report: ListReport
                   ) -> Iterator[tuple[str, str, Stored]]:
    """(bound, plan key, Stored) of the backup objects among files listed in key order,
    for in_plan_order; a key that is not a backup name goes to ``report`` instead.  Names
    are plaintext here (encrypted names do not come in plan order)."""
    assert not codec.encrypt_filenames
    suffix_length = len(OBJECT_SUFFIX)
    for key, size, modified, storage_class in entries:
        try:        # (decode_name for a plaintext name, inlined: a million names)
            name = read_stem(key[:-suffix_length], key[-suffix_length:])
        except BadNameError:
            try:
                decode_name(key, codec)           # its message
            except BadNameError as exc:
                report.bad_names.append(exc.message)
            continue
        # stored_object(), knowing the name was read from this key: are its fields spelled
        # as ours are?
        spelled = _CANONICAL_FIELDS.match(key, len(name.path), len(key) - suffix_length)
        yield object_bound(key), plan_key(name.path), Stored(None if spelled else key, size,
                                                             name, storage_class, modified)


class Listing:
    """A listing held as columns instead of an object per file: every key in one buffer,
    sizes and mtimes in arrays, storage classes as a byte each (once one is not STANDARD),
    and, where an object's key is not its plaintext name (an encrypted name), that name in
    a second buffer.  About 30 bytes an entry plus its key, where an Entry takes about 200;
    it crosses between processes as a few byte strings.  Keys are kept as UTF-8 with
    "surrogatepass": every str comes back, and byte order is str order."""

    def __init__(self) -> None:
        self.keys = bytearray()
        self.ends = array("Q")          # where each key ends in keys
        self.sizes = array("q")
        self.mtimes = array("q")
        self.classes = array("B")       # storage class: an index in class_names (only once
        self.class_names = [""]         # a class other than STANDARD was given)
        self.names = bytearray()        # plaintext names, "" for a key that is its own ...
        self.name_ends = array("Q")     # ... (only once a name has been given)

    def __len__(self) -> int:
        return len(self.ends)

    def append(self, key: str, size: int, mtime: int = 0, storage_class: str = "",
               name: str = "") -> None:
        """One entry: an Entry's fields, and the plaintext name of an encrypted one."""
        self.keys += key.encode("utf-8", "surrogatepass")
        self.ends.append(len(self.keys))
        self.sizes.append(size)
        self.mtimes.append(mtime)
        if storage_class or self.classes:
            self._add_class(storage_class)
        if name and not self.name_ends:
            self.name_ends.extend(itertools.repeat(0, len(self.ends) - 1))
        if self.name_ends or name:
            self.names += name.encode("utf-8", "surrogatepass")
            self.name_ends.append(len(self.names))

    def _add_class(self, storage_class: str) -> None:
        """The class of the entry just appended (the ones before it are STANDARD when this
        is the first other class)."""
        if not self.classes:
            self.classes.extend(itertools.repeat(0, len(self.ends) - 1))
        self.classes.append(self._class_code(storage_class))

    def _class_code(self, storage_class: str) -> int:
        """The index of ``storage_class`` in class_names, added there when new (a few
        classes exist: S3 has ten)."""
        if storage_class not in self.class_names:
            self.class_names.append(storage_class)
        return self.class_names.index(storage_class)

    def storage_class(self, i: int) -> str:
        return self.class_names[self.classes[i]] if self.classes else ""

    def extend(self, other: "Listing") -> None:
        """Append every entry of ``other``."""
        count, base = len(self), len(self.keys)
        if other.classes or self.classes:
            if not self.classes:
                self.classes.extend(itertools.repeat(0, count))
            self.classes.extend(self._class_code(other.storage_class(i))
                                for i in range(len(other)))
        self.keys += other.keys
        self.ends.extend([end + base for end in other.ends])
        self.sizes += other.sizes
        self.mtimes += other.mtimes
        if other.name_ends and not self.name_ends:
            self.name_ends.extend(itertools.repeat(0, count))
        if self.name_ends:
            base = len(self.names)
            self.names += other.names
            self.name_ends.extend([end + base for end in other.name_ends] if other.name_ends
                                  else itertools.repeat(base, len(other)))

    def _bytes(self, i: int) -> bytes:
        """Entry ``i``'s plaintext name as UTF-8: the name given with it, else its key."""
        start, end = (self.name_ends[i - 1] if i else 0, self.name_ends[i]) if \
            self.name_ends else (0, 0)
        if end > start:
            return bytes(self.names[start:end])
        return bytes(self.keys[self.ends[i - 1] if i else 0:self.ends[i]])

    def key(self, i: int) -> str:
        return self.keys[self.ends[i - 1] if i else 0:self.ends[i]].decode(
            "utf-8", "surrogatepass")

    def name(self, i: int) -> str:
        """The plaintext name given with entry ``i``; "" when its key is its name."""
        if not self.name_ends:
            return ""
        return self.names[self.name_ends[i - 1] if i else 0:self.name_ends[i]].decode(
            "utf-8", "surrogatepass")

    def entry(self, i: int) -> Entry:
        return Entry(self.key(i), self.sizes[i], self.mtimes[i], self.storage_class(i))

    def __iter__(self) -> Iterator[Entry]:
        return map(self.entry, range(len(self)))

    def stored(self, i: int) -> Stored:
        """Entry ``i`` as a backup object: its name read again from its plaintext form."""
        key = self.key(i)
        text = self.name(i) or key
        return stored_object(key, self.sizes[i],
                             read_stem(text[:-len(OBJECT_SUFFIX)], text[-len(OBJECT_SUFFIX):]),
                             self.storage_class(i), self.mtimes[i])

    def files_in_order(self) -> Iterator[tuple[str, Entry]]:
        """Every entry, as a source file, in plan order, with its plan key."""
        for i in order_of(len(self), lambda i: self._bytes(i) + b"."):
            entry = self.entry(i)
            yield plan_key(entry.key), entry

    def objects_in_order(self) -> Iterator[tuple[str, Stored]]:
        """Every entry, as a backup object (see stored), in plan order, with its plan key:
        by the path of its plaintext name (what is left of it without the five fields at
        its end)."""
        for i in order_of(len(self), lambda i: self._bytes(i).rsplit(b".", 5)[0] + b"."):
            obj = self.stored(i)
            yield plan_key(obj.name.path), obj


def order_of(count: int, sort_key: Callable[[int], Any]) -> Iterator[int]:
    """0 .. count - 1 in ascending order of ``sort_key`` (equal keys in index order),
    sorted SORT_RUN at a time and then merged."""
    runs = [array("I" if count < 1 << 32 else "Q",
                  sorted(range(start, min(count, start + SORT_RUN)), key=sort_key))
            for start in range(0, count, SORT_RUN)]
    if len(runs) == 1:
        return iter(runs[0])
    return heapq.merge(*runs, key=sort_key)


# =====================================================================================
# Stopping: Ctrl-C and SIGTERM end a run cleanly at any moment
# =====================================================================================
#
# The parent.  Ctrl-C and SIGTERM raise KeyboardInterrupt where they land; main() reports
# it and exits EXIT_INTERRUPTED.  One exception: while code that takes locks may be
# running (the process pool's own code, a thread pool's), an exception raised between a
# lock's acquisition and its ``with`` would leave the lock taken and the run waiting on it
# forever.  There (deferred_stop) the signal is only noted, and the loops that wait on the
# pool raise it at their next check_stop(), every STOP_POLL_SECONDS.  Workers are then
# told to stop (SIGTERM), and killed if they are still cleaning up after
# STOP_GRACE_SECONDS or when a second stop signal comes.
#
# A worker.  SIGTERM inside one of our jobs unwinds the job (_Stopped), which removes the
# temporary files being written, and the process then leaves by exit_now(); outside a job
# (in the pool's own code: the same hazard as above) it leaves by exit_now() at once.
# exit_now() runs no exit handlers and tells the pool nothing: nothing that could wait on
# a lock that a stopped thread holds.

STOP_POLL_SECONDS = 0.2    # how often the parent's waiting loops look for a stop signal
STOP_GRACE_SECONDS = 8     # a worker told to stop that is still cleaning up after this
                           # (aborting an upload on a dead network) is killed
_MAIN_PID = os.getpid()    # the process main() runs in (a forked worker keeps the value)
_DEFER_STOP = False        # True while stop signals are deferred in this process
_STOP_ASKED = False        # a stop signal came meanwhile
_IN_JOB = False            # True while this worker runs one of our jobs


class _Stopped(BaseException):
    """Raised in a worker's job by SIGTERM: the job unwinds, removing its temporary files."""


def exit_now(code: int = EXIT_INTERRUPTED) -> NoReturn:
    """Leave this process at once: no exit handlers, no clean-up of the pool's (see above)."""
    os._exit(code)


def check_stop() -> None:
    """Raise the KeyboardInterrupt a stop signal asked for while it was deferred."""
    global _STOP_ASKED
    if _STOP_ASKED:
        _STOP_ASKED = False
        raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_stop() -> Iterator[None]:
    """Stop signals wait until the block ends (or the block's own check_stop() calls)."""
    global _DEFER_STOP, _STOP_ASKED
    deferred, _DEFER_STOP = _DEFER_STOP, True
    try:
        yield
    except BaseException:
        _STOP_ASKED = False      # the run is stopping already
        raise
    finally:
        _DEFER_STOP = deferred
    check_stop()


def wait_polling(futures: Iterable[Any]) -> tuple[set, set]:
    """concurrent.futures.wait(FIRST_COMPLETED), checking for a stop signal meanwhile."""
    from concurrent.futures import FIRST_COMPLETED, wait
    while True:
        check_stop()
        done, running = wait(futures, STOP_POLL_SECONDS, FIRST_COMPLETED)
        if done:
            return done, running


def _on_stop_signal(signum: int, frame: Any) -> None:
    """Ctrl-C or SIGTERM in the parent: stop the run, or note it while stops are deferred.
    In a worker forked a moment ago, before it set its own handler: leave (it has started
    nothing to clean up)."""
    global _STOP_ASKED
    if os.getpid() != _MAIN_PID:
        exit_now()
    if _DEFER_STOP:
        _STOP_ASKED = True
    else:
        raise KeyboardInterrupt


def parent_stop_signals() -> None:
    """main(): Ctrl-C and SIGTERM stop the run (a Ctrl-C that is ignored stays ignored)."""
    global _MAIN_PID
    _MAIN_PID = os.getpid()
    with contextlib.suppress(ValueError):      # not in the main thread (tests): no handler
        signal.signal(signal.SIGTERM, _on_stop_signal)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _on_stop_signal)


def _stop_worker(signum: int, frame: Any) -> None:
    """SIGTERM in a worker: unwind the job it runs, ignoring any further SIGTERM (the pool
    sends one too once a worker is gone) that would cut the clean-up short; outside a
    job, leave at once."""
    if not _IN_JOB:
        exit_now()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Stopped


def worker_stop_signals() -> None:
    """A new worker: the parent handles Ctrl-C; SIGTERM is the parent telling it to stop."""
    global _DEFER_STOP, _STOP_ASKED
    _DEFER_STOP = _STOP_ASKED = False      # the parent's, copied by fork
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)


def stop_workers(pool: Any) -> None:
    """Cancel what has not started and stop the workers (they remove their temporary
    files on the way out), then wait for them: at most STOP_GRACE_SECONDS, or until a
    second stop signal, after which they are killed."""
    global _STOP_ASKED
    pool.shutdown(wait=False, cancel_futures=True)
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        while child.is_alive():
            child.join(STOP_POLL_SECONDS)
            if _STOP_ASKED or time.monotonic() > deadline:
                for other in children:
                    if other.is_alive():
                        other.kill()
    _STOP_ASKED = False


# =====================================================================================
# Workers: a Batch in, its Outcomes out (module-level, so a process pool can run them)
# =====================================================================================

# A worker's memory is mostly codec state: an xz encoder takes about 11 times its dictionary
# (22 MB for a 2 MB file).  glibc keeps what is freed for reuse, so left alone a worker keeps
# the high-water mark of every codec it ran, in every thread's arena.  Two calls keep it down.
# The other way round, glibc gives back a heap top over its trim threshold at every free()
# (about 2 MiB in our runs: the threshold moves) and maps large blocks on their own, so
# even the smallest file's xz encoder (0.5 MB of hash table, which liblzma clears) came
# from fresh pages the kernel had to zero: 136 page faults a file, 6 of a 16 s one-process
# backup of 20,000 small files.  So a process that runs codecs on local storages keeps
# blocks up to MMAP_THRESHOLD in its heap and up to TRIM_THRESHOLD free at its top, and
# every worker gives back its free heap after a Batch only when it holds more than
# KEEP_FREE beyond what it held after it last did (giving back every time made the next
# Batch fault its codec pages in again: 0.3 of the 1.8 s of verifying the bench's mixed
# set).  Larger blocks (the match finder of a 2 MB file, a multipart upload's part) are
# mapped alone and given back at once: at 32 MiB and 64 MiB instead, the mixed set's S3
# restore peaked at 423 MB instead of 331.
M_ARENA_MAX = -8       # glibc mallopt() parameters
M_MMAP_THRESHOLD = -3
M_TRIM_THRESHOLD = -1
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 8 << 20
KEEP_FREE = 8 << 20            # memory a worker keeps between Batches for the next codecs
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
REMOTE_THREADS = 4     # requests a worker keeps in flight for a grouped Batch on a remote
                       # storage: they wait on the network and the server, not on our CPU
UPLOAD_TRIES = 3       # a file that keeps changing while read is reported after this many reads


@lru_cache(maxsize=1)
def one_malloc_arena() -> bool:
    """Make every thread of this process allocate from glibc's main malloc arena.

    By default each thread that allocates gets an arena of its own, and what a codec frees
    there stays in that arena: a worker's S3 threads grew it by about 35 MB each in the
    benchmark.  The GIL serialises the allocating code anyway, so one arena costs nothing.
    A forked child hands its threads the arenas of the parent's threads, whatever this
    says, so the parent calls it before it starts any thread.
    False where the C library has no mallopt (not glibc).
    """
    mallopt = libc_function("mallopt")
    return mallopt is not None and mallopt(M_ARENA_MAX, 1) == 1


@lru_cache(maxsize=1)
def keep_codec_buffers() -> bool:
    """Keep blocks up to MMAP_THRESHOLD in the heap, and up to TRIM_THRESHOLD free at its
    top (see above): for a process that runs codecs, one file after another, on local
    storages (_Worker.runs_codecs: a worker, or the main process of a one-process run).
    Otherwise the main process (requests, listings) and the listing helper keep glibc's
    own thresholds.
    False where the C library has no mallopt (not glibc)."""
    mallopt = libc_function("mallopt")
    return mallopt is not None and mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and \
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1


def resident_bytes() -> Optional[int]:
    """This process's resident memory (Linux's /proc/self/statm); None where unknown."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


_RESIDENT_AFTER_TRIM = 0    # bytes resident when this process last gave its free heap back


def give_back_memory(keep: int = 0) -> None:
    """Return the free pages of the malloc heap to the system (a job's codec buffers),
    unless the process holds at most ``keep`` bytes more than when it last did: pages
    given back fault in again, zeroed, when the next job needs them."""
    global _RESIDENT_AFTER_TRIM
    trim = libc_function("malloc_trim")
    if trim is None:
        return
    if keep:
        resident = resident_bytes()
        if resident is not None and resident <= _RESIDENT_AFTER_TRIM + keep:
            return
    trim(0)
    _RESIDENT_AFTER_TRIM = resident_bytes() or 0


class _Worker:
    """Per-process state: the storages (and their clients) are built once per process."""

    def __init__(self, config: Config, requests: int = 0):
        one_malloc_arena()
        self.codec = config.codec
        self.src = make_storage(config.src, requests=requests) if config.src else None
        self.dest = make_storage(config.dest, requests=requests, throttle=config.throttle,
                                 lock=config.object_lock) if config.dest else None
        self.restore = restore_storage(config, requests=requests)
        umask = os.umask(0o022)
        os.umask(umask)
        self.file_mode = 0o600 if config.restore_permissions == "private" else 0o666 & ~umask
        self._threads: Any = None
        # Threads overlap remote requests; the CPU work (compressing, decompressing) runs
        # one at a time under this lock, so a process holds one codec's buffers, not one
        # per thread.
        self.cpu = threading.Lock()

    def storage(self, role: Optional[str]) -> Optional[Storage]:
        """The storage of a configuration role ("src", "dest", "restore"); None for None."""
        return getattr(self, role) if role else None

    def configured(self, role: str) -> Storage:
        """The storage of a role a job touches: the run that made the job configured it."""
        storage = getattr(self, role)
        assert storage is not None, f"a job touches {role}, which this run has not"
        return storage

    def runs_codecs(self) -> None:
        """Called in the process that will run the jobs: keep codec buffers in its heap
        (keep_codec_buffers) when its storages are all local.  Where one is remote, large
        objects stream through boto3 here, and with the larger heap a worker's peak grew
        (a mixed S3 verify worker reached 130-140 MB instead of 111)."""
        if not any(storage.remote for storage in self.storages()):
            keep_codec_buffers()

    def storages(self) -> list[Storage]:
        """The storages this process has: src, dest and restore, those configured."""
        return [s for s in (self.src, self.dest, self.restore) if s is not None]

    def discard_unfinished(self) -> None:
        for storage in self.storages():
            storage.discard_unfinished()

    def threads(self) -> Any:
        """This process's small thread pool for remote requests, made on first use.  Its
        threads are daemons: a worker told to stop never waits for them at exit."""
        if self._threads is None:
            from multiprocessing.pool import ThreadPool
            self._threads = ThreadPool(REMOTE_THREADS)
        return self._threads


_WORKER: Optional[_Worker] = None


def _init_worker(config: Config) -> None:
    global _WORKER
    worker_stop_signals()
    # Workers report through their results, never on stderr; a worker stopped while it
    # reads the pool's closing queue would otherwise print a traceback there.  A worker
    # that dies is reported by the parent ("a worker process died").
    sys.stderr = open(os.devnull, "w")
    take_requests()                        # the parent's, copied by fork: not ours
    _WORKER = _Worker(config)
    _WORKER.runs_codecs()


def in_worker(function: Callable[[_Worker, Any], R], item: Any
              ) -> tuple[R, dict[str, int]]:
    """Run ``function(worker, item)`` with this process's worker: where every piece of
    work starts and ends.  Returns its result and the requests it made (take_requests()).
    A file's failure comes back inside the result; a BackupError that ends the run (from
    a listing) passes as it is; anything else is a bug and comes back as a WorkerBug
    carrying its traceback; a stop ends the process (see Stopping)."""
    global _IN_JOB
    worker = _WORKER
    assert worker is not None, "in_worker outside a worker"
    try:
        _IN_JOB = True
        return function(worker, item), take_requests()
    except _Stopped:
        worker.discard_unfinished()  # what this thread left is gone; other threads' too
        exit_now()                   # and tell the pool nothing
    except BackupError:
        raise
    except Exception:
        raise WorkerBug(traceback.format_exc()) from None
    finally:
        _IN_JOB = False
        give_back_memory(KEEP_FREE)


def describe(exc: BaseException) -> str:
    """One line for a file's failure; never includes secrets (they are not in messages)."""
    if isinstance(exc, BackupError):
        return exc.message
    if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
        return (f"{exc.strerror}: the object name is longer than this file system allows "
                "(a name is the file name plus about 40 characters, or with encrypt_filenames "
                "about 1.5 times the whole path plus 150); use shorter names or an S3 "
                "destination")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def failed(job: Job, exc: BaseException) -> Outcome:
    obj = getattr(job, "obj", None)       # the object a restore or verify reads
    damaged = obj.key if obj is not None and isinstance(exc, IntegrityError) else ""
    return Outcome(job.action, job.path, error=describe(exc), damaged=damaged)


def run_batch(worker: _Worker, batch: Batch) -> list[Outcome]:
    """Run a Batch's jobs; grouped ones into one storage batch, whose replaced objects go
    only once the batch is durable.  On a remote storage grouped jobs run on a few
    threads, so that request round trips overlap (boto3 clients are thread-safe;
    compression and ciphers release the GIL)."""
    if not batch.grouped:
        return [_run_one(worker, job) for job in batch.jobs]
    first = batch.jobs[0]
    target = worker.storage(first.writes)
    remote = any(worker.configured(role).remote for role in first.touches)
    run = functools.partial(_run_one, worker, settle=False)
    try:
        with target.batch() if target else contextlib.nullcontext({}) as lost:
            if remote:
                # (in the parent, when it runs the jobs itself, a stop waits for the batch:
                # raised inside the thread pool's code, it could leave one of its locks taken)
                with deferred_stop():
                    running = worker.threads().map_async(run, batch.jobs)
                    while not running.ready():
                        running.wait(STOP_POLL_SECONDS)
                        check_stop()
                    outcomes = running.get()
            else:
                outcomes = [run(job) for job in batch.jobs]
    except FILE_FAILURES as exc:     # the batch's flush failed: none of it counts
        return [failed(job, exc) for job in batch.jobs]
    outcomes = [replace(o, error=describe(lost[o.key]), bytes_in=0, bytes_out=0)
                if o.key in lost else o for o in outcomes]
    return [o if o.error else settle_outcome(worker, job, o)
            for job, o in zip(batch.jobs, outcomes)]


def _run_one(worker: _Worker, job: Job, settle: bool = True) -> Outcome:
    """One job; its failure becomes its Outcome.  ``settle``: finish at once what waits
    for the job's write to be durable (in a grouped Batch, the batch does it)."""
    try:
        outcome = HANDLERS[type(job)].run(worker, job)
    except FILE_FAILURES as exc:    # one file's failure must not stop the others
        return failed(job, exc)
    return settle_outcome(worker, job, outcome) if settle else outcome


def settle_outcome(worker: _Worker, job: Job, outcome: Outcome) -> Outcome:
    """The Outcome once what waits for the job's write to be durable is done."""
    settle = HANDLERS[type(job)].settle
    return settle(worker, job, outcome) if settle else outcome


def _upload(worker: _Worker, job: Upload) -> Outcome:
    """Back up one file.  What it replaces is dealt with by _replaced()."""
    job, (md5, length, written), key = _encode_file(worker, job, worker.configured("dest").store)
    return Outcome(job.action, job.path, bytes_in=length, bytes_out=written, key=key,
                   md5=md5)


class Encoded(NamedTuple):
    """A small file's object, made by a worker, for the request scheduler to store (see the
    Driver)."""

    job: Upload
    key: str
    data: bytes
    md5: bytes
    length: int


def encode_uploads(worker: _Worker, jobs: tuple[Upload, ...]
                   ) -> tuple[list[Encoded], list[Outcome]]:
    """The objects of small files, encoded in memory, and the Outcomes of those that
    failed."""
    out: list[Encoded] = []
    failures: list[Outcome] = []
    sink = io.BytesIO()

    def into_memory(folder: str, fill: Callable[[BinaryIO], R], key_of: Callable[[R], str],
                    expect: int = 0) -> tuple[R, str]:
        sink.seek(0)
        sink.truncate()
        result = fill(sink)
        return result, key_of(result)

    for job in jobs:
        try:
            job, (md5, length, _), key = _encode_file(worker, job, into_memory)
        except FILE_FAILURES as exc:
            failures.append(failed(job, exc))
            continue
        out.append(Encoded(job, key, sink.getvalue(), md5, length))
    return out, failures


def _encode_file(worker: _Worker, job: Upload, store: Callable[..., tuple[Any, str]]
                 ) -> tuple[Upload, tuple[bytes, int, int], str]:
    """Read and encode a source file through ``store`` (a storage's, or into memory):
    (the job with the size and mtime read, (md5, length, bytes written), key)."""
    codec = worker.codec
    folder = "" if codec.encrypt_filenames else job.path.rpartition("/")[0]
    for attempt in range(UPLOAD_TRIES):
        with worker.configured("src").open(job.path) as src:
            def fill(sink: BinaryIO) -> tuple[bytes, int, int]:
                start = sink.tell()
                with worker.cpu:
                    md5, length = encode(src, job.size, codec, sink)
                return md5, length, sink.tell() - start

            def key_of(result: tuple[bytes, int, int]) -> str:
                md5, length, _ = result
                if length != job.size or not worker.configured("src").is_unchanged(
                        src, Entry(job.path, job.size, job.mtime)):
                    raise SourceChangedError(f"{job.path} changed while it was being read")
                return encode_name(BackupName(job.path, job.mtime, length, md5), codec)

            try:
                result, key = store(folder, fill, key_of, expect=job.size)
                return job, result, key
            except SourceChangedError:
                if attempt == UPLOAD_TRIES - 1:
                    raise SourceChangedError(f"{job.path} kept changing while it was read "
                                             f"({UPLOAD_TRIES} tries); it will be tried again "
                                             "next run") from None
        fresh = worker.configured("src").stat(job.path)
        job = replace(job, size=fresh.size, mtime=fresh.mtime)
    raise AssertionError("not reached")


def _replaced(worker: _Worker, job: Upload, outcome: Outcome) -> Outcome:
    """Once the new object is durable: remove the objects it replaces and keep the old
    contents as versions (or remove them too when the content did not change).  The new
    object is safe already, so a failure here is a warning: the next run sees the extra
    object and does it."""
    kept = 0
    try:
        for old in job.replaces:
            if old != outcome.key:
                worker.configured("dest").remove(old)
        for version in job.versions:
            if version.old.key == outcome.key:
                continue
            if version.old.name.md5 == outcome.md5:    # only the mtime changed
                worker.configured("dest").remove(version.old.key)
            else:
                _rename(worker, version)
                kept += 1
    except FILE_FAILURES as exc:
        return replace(outcome, versions=kept, warning=f"stored, but its old object was not "
                       f"removed or kept as a version ({describe(exc)}); the next run will")
    return replace(outcome, versions=kept) if kept != outcome.versions else outcome


def _mark(worker: _Worker, job: Mark) -> Outcome:
    worker.configured("dest").put(encode_name(job.name, worker.codec), b"")
    return Outcome(job.action, job.path)


def _rename(worker: _Worker, job: Rename) -> Outcome:
    worker.configured("dest").rename(job.old.key, encode_name(job.name, worker.codec), job.old.size)
    return Outcome(job.action, job.path)


def _extend(worker: _Worker, job: Extend) -> Outcome:
    if worker.configured("dest").extend_lock(job.old.key, job.until):
        return Outcome(job.action, job.path)
    return Outcome("check lock", job.path)      # an earlier run extended it


def _remove(worker: _Worker, job: Remove) -> Outcome:
    worker.configured("dest").remove(job.old.key)
    return Outcome(job.action, job.path)


class _NullSink:
    """Where verify decodes to: decode() itself checks size and MD5, so nothing is kept.
    (A BinaryIO as far as decode() goes: it only writes to its sink.)"""

    @staticmethod
    def write(data: bytes) -> int:
        return len(data)


def _object_source(worker: _Worker, obj: Stored, data: Optional[bytes]
                   ) -> ContextManager[Union[BinaryIO, bytes]]:
    """What decode() reads: the object's bytes when the request scheduler fetched them
    (``data``) or it is small (read whole here), else a stream of it."""
    dest = worker.dest
    assert dest is not None              # (restore and verify read the destination)
    if data is None and obj.size < SMALL_FILE:
        data = dest.read(obj.key, obj.size + 1)
        if len(data) > obj.size:       # larger than listed: rewritten since, so streamed
            data = None
    return contextlib.nullcontext(data) if data is not None else dest.open(obj.key)


def restorable(name: BackupName) -> str:
    """The path a restore writes the object of ``name`` to; UnsafePathError or
    IntegrityError when a restore refuses the name (so a verify fails it too)."""
    path = safe_relpath(name.path)
    try:
        time.gmtime(name.mtime)
    except (OverflowError, OSError, ValueError):
        raise IntegrityError(f"its name declares an impossible mtime ({name.mtime})") from None
    return path


def _restore(worker: _Worker, job: Restore, data: Optional[bytes] = None) -> Outcome:
    obj = job.obj
    name = obj.name
    path = restorable(name)

    def fill(sink: BinaryIO) -> None:
        with worker.cpu:
            decode(src, name.size, name.md5, worker.codec, sink)

    with _object_source(worker, obj, data) as src:
        worker.restore.store(path.rpartition("/")[0], fill, lambda _: path, mtime=name.mtime,
                             mode=worker.file_mode, expect=name.size)
    return Outcome(job.action, name.path, bytes_in=obj.size, bytes_out=name.size, key=path)


def _verify(worker: _Worker, job: Verify, data: Optional[bytes] = None) -> Outcome:
    obj = job.obj
    name = obj.name
    restorable(name)
    with _object_source(worker, obj, data) as src, worker.cpu:
        decode(src, name.size, name.md5, worker.codec, cast(BinaryIO, _NullSink()))
    return Outcome(job.action, name.path, bytes_in=obj.size, bytes_out=name.size)


class Handler(NamedTuple):
    """How a worker does one kind of job."""

    run: Callable[..., Outcome]   # (worker, job), and the fetched bytes for restore, verify
    settle: Optional[Callable[[_Worker, Any, Outcome], Outcome]] = None
    # ^ once what run() wrote is durable (for a grouped Batch: after the batch)


HANDLERS: dict[type, Handler] = {
    Upload: Handler(_upload, _replaced), Rename: Handler(_rename), Mark: Handler(_mark),
    Remove: Handler(_remove), Extend: Handler(_extend),
    Restore: Handler(_restore), Verify: Handler(_verify)}


def decode_fetched(worker: _Worker, items: tuple[tuple[Job, bytes], ...]) -> list[Outcome]:
    """Restore or verify objects whose bytes the request scheduler fetched, as one grouped
    Batch."""
    first = items[0][0]
    target = worker.storage(first.writes)
    outcomes = []
    try:
        with target.batch() if target else contextlib.nullcontext({}) as lost:
            for job, data in items:
                try:
                    outcomes.append(HANDLERS[type(job)].run(worker, job, data))
                except FILE_FAILURES as exc:
                    outcomes.append(failed(job, exc))
    except FILE_FAILURES as exc:     # the batch's flush failed: none of it counts
        return [failed(job, exc) for job, _ in items]
    return [replace(o, error=describe(lost[o.key]), bytes_in=0, bytes_out=0)
            if o.key in lost else o for o in outcomes]


def decode_names(worker: _Worker, keys: tuple[tuple[str, int, str, int], ...]
                 ) -> list[tuple[str, int, str, int, Union[BackupName, str]]]:
    """(key, size, storage class, mtime, BackupName or why the key is not one) of listed
    objects given as (key, size, storage class, mtime)."""
    return [(key, size, storage_class, mtime, parse_name(key, worker.codec))
            for key, size, storage_class, mtime in keys]


def parse_name(key: str, codec: Codec) -> Union[BackupName, str]:
    """A BackupName, or the message saying why the key is not one."""
    try:
        return decode_name(key, codec)
    except BadNameError as exc:
        return exc.message


# =====================================================================================
# Reporting: log lines, the progress line, the summary
# =====================================================================================

DONE_WORDS = {"upload": "uploaded", "mark deleted": "marked deleted", "undelete": "undeleted",
              "expire": "expired", "duplicate": "duplicates removed", "restore": "restored",
              "verify": "verified", "keep version": "versions kept",
              "expire version": "versions expired", "drop mark": "deletion marks removed",
              "repair": "repaired", "extend lock": "locks extended", "check lock": "locks checked"}


def show(path: str) -> str:
    """A path for a log line: control characters and undecodable bytes escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


class Progress:
    """One status line on stderr, redrawn at most 5 times a second, only on a terminal.

    Log lines erase it first (see setup_logging), so cron and Docker logs never see it.
    """

    shown: Optional["Progress"] = None      # the bar currently on screen, if any

    def __init__(self, files: int, size: int):
        self.files, self.size = files, size
        self.started = self.drawn = time.monotonic()

    @classmethod
    def erase(cls) -> None:
        if cls.shown is not None:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            cls.shown = None

    def update(self, files: int, size: int, final: bool = False) -> None:
        now = time.monotonic()
        if now - self.drawn < 0.2 and not final:
            return
        self.drawn = now
        elapsed = max(now - self.started, 1e-9)
        rate = size / elapsed
        left = (self.size - size) / rate if rate > 0 and self.size > size else 0
        share = size / self.size if self.size else files / max(self.files, 1)
        bar = "#" * int(share * 20)
        sys.stderr.write(f"\r[{bar:<20}] {files}/{self.files} files, {human(size)}/"
                         f"{human(self.size)}, {rate / 1e6:.1f} MB/s, ETA {left:.0f} s\033[K")
        sys.stderr.flush()
        Progress.shown = self


class Tally:
    """Counts outcomes, reports failures as they come, and prints the summary."""

    def __init__(self, verbose: bool = False, ok_lines: bool = False, files: int = 0,
                 size: int = 0, progress: bool = False):
        self.counts: dict[str, int] = {}
        self.failed = 0
        self.bytes_in = self.bytes_out = 0
        self.started = time.monotonic()
        self.verbose, self.ok_lines = verbose, ok_lines
        self.progress = Progress(files, size) if progress and sys.stderr.isatty() else None

    def add(self, outcome: Outcome) -> None:
        if outcome.error:
            self.failed += 1
            log.error("FAILED %s %s: %s", outcome.action, show(outcome.path), outcome.error)
        else:
            if outcome.warning:
                log.warning("warning: %s %s: %s", outcome.action, show(outcome.path),
                            outcome.warning)
            self.counts[outcome.action] = self.counts.get(outcome.action, 0) + 1
            if outcome.versions:
                self.counts["keep version"] = self.counts.get("keep version", 0) + \
                    outcome.versions
            self.bytes_in += outcome.bytes_in
            self.bytes_out += outcome.bytes_out
            if self.ok_lines:     # (a verify's: "OK", and what else it did)
                log.info("OK %s%s", show(outcome.path), "" if outcome.action == "verify"
                         else f" ({DONE_WORDS.get(outcome.action, outcome.action)})")
            elif self.verbose:
                log.info("%s %s", outcome.action, show(outcome.path))
        if self.progress:
            self.progress.update(sum(self.counts.values()) + self.failed, self.bytes_in)

    def warn(self, action: str, path: str, message: str) -> None:
        """Something done, with something to tell that came after its Outcome."""
        log.warning("warning: %s %s: %s", action, show(path), message)

    def summary(self, what: str, extra: Iterable[tuple[str, int]] = (),
                out_word: str = "written", destination: Optional[tuple[int, int]] = None,
                part: Optional[Subset] = None) -> None:
        """The summary line.  Its record also carries every figure by a snake_case name
        (``figures``, for the monitors), and ``destination``: (objects, bytes) of the
        backup objects the destination holds now, as far as the run knows (of its slice's
        paths, with ``part``: --slice, named in the line)."""
        Progress.erase()
        elapsed = max(time.monotonic() - self.started, 1e-9)
        done = [(DONE_WORDS.get(k, k), n) for k, n in (*self.counts.items(), *extra)]
        parts = [f"{n} {word}" for word, n in done if n]
        parts.append(f"{self.failed} failed")
        rate = self.bytes_in / elapsed / 1e6
        figures: dict[str, float] = {re.sub(r"\W+", "_", word): n for word, n in done}
        figures.update({"failed": self.failed, "bytes_read": self.bytes_in,
                        f"bytes_{out_word}": self.bytes_out, "seconds": round(elapsed, 3),
                        "mb_per_s": round(rate, 3)})
        if destination is not None:
            figures["destination_objects"], figures["destination_bytes"] = destination
        log.info("%s done: %s; %s read, %s %s in %.1f s (%.1f MB/s)",
                 f"{what} of slice {part}" if part else what, ", ".join(parts), human(self.bytes_in), human(self.bytes_out), out_word,
                 elapsed, rate, extra={"summary": True, "figures": figures})
        log_requests()


def log_requests() -> None:
    """The line that tells the S3 requests this run made, by kind, and how many were
    retried (none, no line: a local run).  Its counts start again from zero."""
    requests = take_requests()
    attempts = requests.pop("attempts", 0)
    if requests:
        made = sum(requests.values())
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(
            requests.items(), key=lambda item: (-item[1], item[0])))
        log.info("requests: %s; %d retried", kinds, max(0, attempts - made),
                 extra={"summary": True})


# =====================================================================================
# Monitoring: health pings, the webhook, the metrics file, pre/post commands
# =====================================================================================
#
# An unattended run tells how it went.  A health check URL is pinged when it starts and
# when it ends (<url>/start, then <url> on success or <url>/fail: the convention of
# healthchecks.io, Uptime Kuma and Cronitor-like services), a webhook gets the outcome
# as JSON, and a Prometheus textfile keeps the last figures of each kind of run.  A
# backup can run a shell command before it (a database dump) and after it.  The Monitor
# sees a run only from outside, through the log records (the failure lines, the
# summary's figures) and the exit code main() picks; nothing it does changes that code.

NOTIFY_TIMEOUT = 10        # seconds a ping or webhook request may take
NOTIFY_TRIES = 3           # tries per message (an answer 4xx but 408 and 429 is final); a
                           # URL whose server never answered gets nothing more in this run
NOTIFY_BACKOFF = 2.0       # seconds before the second try, doubled before each next one
PING_BODY_MAX = 100_000    # bytes of an end ping's body (what healthchecks.io keeps)
WEBHOOK_FAILURES = 50      # failure lines a webhook carries: the first ones ...
MESSAGE_FAILURES = 10      # ... of which its short "message" repeats this many
COMMAND_TAIL = 5           # last output lines of a failed pre_command quoted in the error
COMMAND_LINE_MAX = 200     # characters of each of them
COMMAND_GRACE_SECONDS = 5  # a stopped command (timeout, Ctrl-C) gets this long after SIGTERM
                           # before SIGKILL ends what is left of it
COMMAND_POLL_SECONDS = 0.1  # how often a quiet command is looked at: has its shell exited?
COMMAND_DRAIN_READS = 64   # reads of what a command's streams hold once its shell exited
COMMAND_PARTIAL_MAX = 64 * 1024   # bytes of output without a newline logged as one line
METRIC_PREFIX = "encrypted_s3_backup_"
FIGURES = {                # the summary figures of each kind of run; a webhook sends them
    "backup": ("uploaded", "unchanged", "marked_deleted", "undeleted", "expired",   # all
               "duplicates_removed", "versions_kept", "versions_expired",
               "deletion_marks_removed", "skipped", "ignored", "failed", "bytes_read",
               "bytes_written", "mass_change_files"),
    "restore": ("restored", "failed", "bytes_read", "bytes_written"),
    "verify": ("verified", "skipped", "failed", "bytes_read", "bytes_checked"),
}
METRICS = (                # (name after METRIC_PREFIX, HELP); gauges labelled kind="backup"...
    ("last_start_timestamp_seconds", "When the last run of this kind started (Unix time)."),
    ("last_end_timestamp_seconds", "When the last run of this kind ended (Unix time)."),
    ("last_success_timestamp_seconds",
     "When the last run of this kind that exited 0 ended (Unix time)."),
    ("last_exit_code", "Exit code of the last run of this kind (0 success, 1 some files "
                       "failed, 2 configuration, storage or refused, 3 bug, 4 waiting on "
                       "archive thaws, 5 a mass change kept as history, 130 interrupted)."),
    ("last_duration_seconds", "How long the last run of this kind took."),
    ("last_files", "Files of the last run of this kind by result: read and written in full, "
                   "unchanged, failed, skipped (verify --subset)."),
    ("last_bytes", "Bytes the last run of this kind read and wrote (a verify writes none)."),
    ("destination_objects", "Backup objects on the destination after the last run of this "
                            "kind (that got as far as listing it)."),
    ("destination_bytes", "Bytes of those backup objects."),
    ("last_mass_change_files", "Files the last backup that planned found changed when they "
                               "were more than half of the backed-up files (exit code 5), "
                               "else 0."),
    ("destination_versioning", "1 when the S3 destination had versioning on as the last run "
                               "of this kind started, else 0."),
    ("destination_object_lock", "1 when it had Object Lock with a default retention, else 0."),
)
FILE_RESULTS = {           # last_files{result=...}: the summary figure counted, per kind
    "backup": {"read": "uploaded", "written": "uploaded", "unchanged": "unchanged",
               "skipped": "skipped"},
    "restore": {"read": "restored", "written": "restored"},
    "verify": {"read": "verified", "skipped": "skipped"},
}
KEPT_METRICS = ("last_success_timestamp_seconds", "destination_objects", "destination_bytes",
                "last_mass_change_files", "destination_versioning", "destination_object_lock")
# ^ a run that does not know these leaves the last values in the file
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]   # (name, labels): value


def url_origin(url: str) -> str:
    """All that output may show of a URL (its path and query carry a key): scheme and host."""
    import urllib.parse
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"   # no user or password


def with_suffix(url: str, suffix: str) -> str:
    """``url`` with ``suffix`` ("/start", "/fail") added to its path, before any query."""
    import urllib.parse
    if not suffix:
        return url
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + suffix))


def basic_auth(url: str) -> tuple[str, Optional[str]]:
    """``url`` without its user information (``https://user:pass@host/...``), and that as
    an HTTP basic authorization header's value (None when the URL has none).  The user
    and password are percent-decoded, as a browser does."""
    import base64
    import urllib.parse
    parts = urllib.parse.urlsplit(url)
    user_info, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = user_info.partition(":")
    pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
    credentials = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return urllib.parse.urlunsplit(parts._replace(netloc=host)), f"Basic {credentials}"


def deliver(url: str, body: Optional[bytes] = None,
            content_type: str = "text/plain; charset=utf-8") -> str:
    """One message: a GET without a body, a POST with one.  "" once it was accepted, else
    why not, after NOTIFY_TRIES tries NOTIFY_TIMEOUT long each with a growing pause
    between them.  User information in the URL is sent as basic authentication (to the
    URL's host only, not to one it redirects to).  The reason never holds the URL."""
    import http.client
    import urllib.error
    import urllib.request
    try:
        target, authorization = basic_auth(url)
    except ValueError:
        return "not a URL that can be requested"
    headers = {"User-Agent": f"encrypted_s3_backup/{__version__}"}
    if body is not None:
        headers["Content-Type"] = content_type
    why = ""
    for attempt in range(NOTIFY_TRIES):
        if attempt:
            time.sleep(NOTIFY_BACKOFF * 2 ** (attempt - 1))
        try:
            request = urllib.request.Request(target, data=body, headers=headers,
                                             method="GET" if body is None else "POST")
            if authorization:
                request.add_unredirected_header("Authorization", authorization)
            with urllib.request.urlopen(request, timeout=NOTIFY_TIMEOUT) as answer:
                answer.read(64 * 1024)
            return ""
        except urllib.error.HTTPError as exc:
            why = f"HTTP {exc.code}"
            exc.close()
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                break                    # asking again gets the same answer
        except urllib.error.URLError as exc:
            why = str(exc.reason)
        except (OSError, http.client.HTTPException) as exc:
            why = str(exc) or type(exc).__name__
        except ValueError:
            return "not a URL that can be requested"
    return why.replace(url, url_origin(url)).replace(target, url_origin(url))


def command_status(status: int) -> str:
    return f"killed by signal {-status}" if status < 0 else f"exit status {status}"


def run_command(what: str, command: str, env: dict[str, str], timeout: float
                ) -> tuple[Optional[int], list[str]]:
    """Run a shell command with its output in the log as it comes, each line prefixed with
    ``what`` (stdout as progress, stderr as warnings); its exit status (negative: the
    signal that killed it; None: it ran longer than ``timeout`` seconds and was stopped)
    and its last lines of output.  The wait is for the shell's exit, not for the end of
    its output: a process it leaves in the background keeps running, and what that writes
    afterwards is not read (its output pipe is closed).  A stop (Ctrl-C, SIGTERM) stops
    the command and all it started, then goes on as a stop."""
    import selectors
    import subprocess
    last: collections.deque[str] = collections.deque(maxlen=COMMAND_TAIL)
    log.info("%s: running", what)
    process: Optional[subprocess.Popen] = None
    pending: dict[int, bytearray] = {}              # a stream's unfinished line
    levels: dict[int, int] = {}

    def signal_all(signum: int) -> bool:
        """Send ``signum`` to the command and all it started (its own process group);
        False when none of them is left."""
        assert process is not None           # (called once the shell runs)
        try:
            os.killpg(process.pid, signum)
            return True
        except ProcessLookupError:
            return False
        except OSError:        # (not ours to signal any more: the group is someone else's)
            return False

    def stop_all() -> None:
        """SIGTERM to the command and all it started; SIGKILL to what is left of them after
        COMMAND_GRACE_SECONDS, or at once on another stop signal."""
        assert process is not None           # (called once the shell runs)
        log.warning("%s: stopping it and all it started (SIGTERM, then SIGKILL after %d s)",
                    what, COMMAND_GRACE_SECONDS)
        signal_all(signal.SIGTERM)
        deadline = time.monotonic() + COMMAND_GRACE_SECONDS
        try:
            while time.monotonic() < deadline:
                if process.returncode is None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(STOP_POLL_SECONDS)
                else:                   # the shell is gone: do others of the group remain?
                    time.sleep(STOP_POLL_SECONDS)
                if process.returncode is not None and not signal_all(0):
                    return
        except KeyboardInterrupt:
            pass
        signal_all(signal.SIGKILL)
        process.wait()

    def line_out(fd: int, raw: bytes) -> None:
        line = show(raw.decode("utf-8", "replace").rstrip("\r"))
        last.append(line[:COMMAND_LINE_MAX])
        log.log(levels[fd], "%s: %s", what, line)

    def read(selector: Any, fd: int) -> None:
        """What the stream holds now, logged line by line; at its end, the rest."""
        try:
            data = os.read(fd, 64 * 1024)
        except BlockingIOError:
            return
        buffer = pending[fd]
        buffer += data
        *lines, rest = bytes(buffer).split(b"\n")
        if rest and (not data or len(rest) > COMMAND_PARTIAL_MAX):   # the end, or a line
            lines.append(rest)                                       # too long to wait for
            rest = b""
        for line in lines:
            line_out(fd, line)
        pending[fd] = bytearray(rest)
        if not data:
            selector.unregister(fd)

    # One try from before the shell starts to its exit: a stop at any point in between
    # (while the shell starts, while its output is read, ...) stops it.
    try:
        with deferred_stop():       # a stop while the shell starts comes once its pid is known
            try:
                process = subprocess.Popen(command, shell=True, env=env,
                                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, start_new_session=True)
            except OSError as exc:
                return 127, [f"cannot start a shell: {exc.strerror}"]
        assert process.stdout is not None and process.stderr is not None    # (PIPE)
        with selectors.DefaultSelector() as selector, process.stdout, process.stderr:
            for stream, level in ((process.stdout, logging.INFO),
                                  (process.stderr, logging.WARNING)):
                os.set_blocking(stream.fileno(), False)
                selector.register(stream.fileno(), selectors.EVENT_READ)
                pending[stream.fileno()], levels[stream.fileno()] = bytearray(), level
            deadline = time.monotonic() + timeout
            while process.poll() is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    stop_all()
                    return None, list(last)
                if not selector.get_map():       # both streams ended: the shell's exit
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(min(left, STOP_POLL_SECONDS))
                    continue
                for key, _ in selector.select(min(left, COMMAND_POLL_SECONDS)):
                    read(selector, key.fd)
            # The shell is gone: what its streams hold now is read, not what comes later.
            for _ in range(COMMAND_DRAIN_READS):
                ready = selector.select(0) if selector.get_map() else []
                if not ready:
                    break
                for key, _ in ready:
                    read(selector, key.fd)
            for fd, rest in pending.items():
                if rest:
                    line_out(fd, bytes(rest))
        return process.returncode, list(last)
    except BaseException:
        if process is not None and process.returncode is None:
            stop_all()
        raise


class DestinationTotals:
    """The backup objects on the destination, counted and summed: the listing's, then
    changed by each outcome of the run.  An upload adds its object and removes the ones it
    replaces (and an old object it would keep as a version when the content is the same,
    see _replaced); a removal removes one, a deletion mark adds one; renames change
    neither."""

    def __init__(self, plan: Plan):
        self.objects, self.bytes = plan.objects, plan.object_bytes
        self._removed: dict[tuple[str, str], list[int]] = {}   # (action, path): sizes
        for job in plan.removes:
            self._removed.setdefault((job.action, job.path), []).append(job.old.size)
        self._replaced = dict(plan.replaced)                   # path: (objects, bytes)
        self._versions = {u.path: u.versions for u in plan.uploads if u.versions}
        self._marks = {job.path for job in plan.marks}

    def add(self, outcome: Outcome) -> None:
        if outcome.error:
            return
        if outcome.action == "upload":
            count, size = self._replaced.pop(outcome.path, (0, 0))
            for version in self._versions.pop(outcome.path, ()):
                if version.old.key == outcome.key or version.old.name.md5 == outcome.md5:
                    count, size = count + 1, size + version.old.size
            self.objects += 1 - count
            self.bytes += outcome.bytes_out - size
        elif outcome.action == "mark deleted" and outcome.path in self._marks:
            self._marks.discard(outcome.path)
            self.objects += 1
        elif self._removed.get((outcome.action, outcome.path)):
            self.objects -= 1
            self.bytes -= self._removed[outcome.action, outcome.path].pop()

    def figures(self) -> tuple[int, int]:
        return self.objects, self.bytes


def _metric_line(name: str, labels: tuple[tuple[str, str], ...], value: float) -> str:
    text = ",".join(f'{key}="{word}"' for key, word in labels)
    number = str(int(value)) if float(value).is_integer() else repr(float(value))
    return f"{METRIC_PREFIX}{name}{{{text}}} {number}"


def read_metrics(path: str) -> Samples:
    """The samples of a metrics file this tool wrote, {(name, labels): value}; lines it
    does not recognise are dropped."""
    samples = {}
    with contextlib.suppress(FileNotFoundError):
        with open(path, encoding="utf-8", errors="replace") as text:
            for line in text:
                match = re.fullmatch(re.escape(METRIC_PREFIX) + r"(\w+)\{(.*)\} (\S+)\n?", line)
                if match and match[1] in dict(METRICS):
                    with contextlib.suppress(ValueError):
                        samples[match[1], tuple(re.findall(r'(\w+)="([\w /]*)"', match[2]))] = \
                            float(match[3])
    return samples


def write_metrics(path: str, kind: str, samples: Samples, part: str = "") -> None:
    """Put ``kind``'s samples into the textfile at ``path``, keeping the other kinds' (and
    other slices', ``part``: the run's slice="I/N" label, see --slice) and, when
    ``samples`` lacks one of KEPT_METRICS, its last value.  The file is replaced
    whole (a temporary file beside it, renamed), so a reader never sees part of one; the
    folder is locked meanwhile, so that runs ending together keep each other's lines."""
    import fcntl
    folder = os.path.dirname(os.path.abspath(path))
    lock = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = {key: value for key, value in read_metrics(path).items()
                  if ("kind", kind) not in key[1] or dict(key[1]).get("slice", "") != part or (
                      key[0] in KEPT_METRICS and not any(k[0] == key[0] for k in samples))}
        merged.update(samples)
        lines = []
        for name, text in METRICS:
            lines += [f"# HELP {METRIC_PREFIX}{name} {text}",
                      f"# TYPE {METRIC_PREFIX}{name} gauge"]
            lines += [_metric_line(name, labels, merged[name, labels])
                      for metric, labels in sorted(merged) if metric == name]
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(), dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write("\n".join(lines) + "\n")
                out.flush()
                os.fsync(out.fileno())
            umask = os.umask(0o022)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)      # node-exporter may run as another user
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
    finally:
        os.close(lock)


def metric_samples(kind: str, code: int, started: float, ended: float,
                   figures: dict[str, Any], part: str = "") -> Samples:
    """A run's samples for the metrics file; ``part``: its slice (--slice), a label."""
    by_kind = (("kind", kind),) + ((("slice", part),) if part else ())
    samples: Samples = {("last_start_timestamp_seconds", by_kind): started,
               ("last_end_timestamp_seconds", by_kind): ended,
               ("last_exit_code", by_kind): code,
               ("last_duration_seconds", by_kind): round(ended - started, 3)}
    if code == EXIT_OK:
        samples["last_success_timestamp_seconds", by_kind] = ended
    counted = {**FILE_RESULTS[kind], "failed": "failed"}
    for result in ("read", "written", "unchanged", "failed", "skipped"):
        samples["last_files", by_kind + (("result", result),)] = \
            figures.get(counted.get(result, ""), 0)
    for result in ("read", "written"):
        samples["last_bytes", by_kind + (("result", result),)] = \
            figures.get(f"bytes_{result}", 0)
    for name in ("destination_objects", "destination_bytes", "destination_versioning",
                 "destination_object_lock"):
        if name in figures:
            samples[name, by_kind] = figures[name]
    if kind == "backup" and figures:      # (a backup that got as far as its summary)
        samples["last_mass_change_files", by_kind] = figures.get("mass_change_files", 0)
    return samples


def iso_time(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment, datetime.timezone.utc).isoformat(
        timespec="seconds")


class Monitor(logging.Handler):
    """One run as the world outside sees it.  Attached to the log, it keeps the summary's
    figures, the failure lines (the errors) and what needs attention (a record with an
    ``attention`` attribute: its message, and the figures that attribute holds).  begin()
    sends the start ping and, before a backup, runs the pre_command; end() runs the
    post_command and reports the outcome: the metrics file, the webhook, the end ping.
    For ``kind`` None (a list, a dry run) it does nothing."""

    def __init__(self, kind: Optional[str], config_path: Optional[str]):
        super().__init__(logging.INFO)
        self.kind, self.config_path = kind, config_path
        self.started = time.time()
        self.alerts: Optional[Alerts] = None     # known once the configuration loaded
        self.post_command: Optional[str] = None  # set once a backup is under way
        self.command_timeout = COMMAND_TIMEOUT
        self.summary, self.figures = "", dict[str, Any]()
        self.attention: list[str] = []           # what needs attention, e.g. a mass change
        self.attention_figures: dict[str, Any] = {}
        self.gauges: dict[str, int] = {}         # the destination's protection (metrics only)
        self.part = ""                           # the run's slice, "I/N" (--slice), if any
        self.first: list[str] = []               # the first WEBHOOK_FAILURES failure lines
        self.last: collections.deque[str] = collections.deque()  # the last ones, within
        self.last_bytes = 0                                        # PING_BODY_MAX bytes
        self.given_up: set[str] = set()          # URLs whose server never answered
        if kind is not None:
            log.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if (attention := getattr(record, "attention", None)) is not None:
            self.attention.append(record.getMessage().removeprefix("warning: "))
            self.attention_figures.update(attention)
        elif record.levelno >= logging.ERROR:
            for line in record.getMessage().splitlines():
                if len(self.first) < WEBHOOK_FAILURES:
                    self.first.append(line)
                self.last.append(line)
                self.last_bytes += len(line.encode("utf-8", "replace")) + 1
                while self.last_bytes > PING_BODY_MAX:
                    self.last_bytes -= len(self.last.popleft().encode("utf-8", "replace")) + 1
        elif (figures := getattr(record, "figures", None)) is not None:
            self.summary, self.figures = record.getMessage(), figures
        elif (gauges := getattr(record, "gauges", None)) is not None:
            self.gauges.update(gauges)

    def begin(self, config: Config) -> None:
        """The run starts: the start ping; before a backup, the pre_command (CommandError
        when it fails: the backup then does not start)."""
        if self.kind is None:
            return
        self.alerts = config.alerts
        if self.kind == "backup":
            self.post_command = config.post_command
            self.command_timeout = config.command_timeout
        self._send(config.alerts.healthcheck_url, "/start")
        if self.kind == "backup" and config.pre_command:
            status, tail = run_command("pre_command", config.pre_command, dict(os.environ),
                                       config.command_timeout)
            if status is None:
                raise CommandError(
                    f"pre_command did not finish within command_timeout "
                    f"({config.command_timeout} s), so it was stopped with all it started; the "
                    "backup did not start and nothing was changed. Fix the command, or raise "
                    "command_timeout (environment COMMAND_TIMEOUT)")
            if status:
                said = f": {' | '.join(tail)}" if tail else " with no output"
                raise CommandError(
                    f"pre_command failed ({command_status(status)}){said}; the backup did not "
                    "start and nothing was changed. Fix the command, or unset pre_command "
                    "(environment PRE_COMMAND)")

    def end(self, code: int) -> None:
        """The run is over with exit ``code``: the post_command, then the reports."""
        if self.kind is None:
            return
        try:
            if self.post_command:
                status, _ = run_command("post_command", self.post_command,
                                        {**os.environ, "BACKUP_EXIT_CODE": str(code)},
                                        self.command_timeout)
                if status is None:
                    log.warning("warning: post_command did not finish within command_timeout "
                                "(%d s), so it was stopped with all it started; the backup's "
                                "outcome is unchanged", self.command_timeout)
                elif status:
                    log.warning("warning: post_command failed (%s); the backup's outcome is "
                                "unchanged", command_status(status))
            self._report("success" if code == EXIT_OK else
                         "attention" if code == EXIT_ATTENTION else "failure", code)
        except KeyboardInterrupt:
            log.warning("warning: interrupted while reporting the run's outcome")
        finally:
            log.removeHandler(self)

    def skipped(self, why: str) -> None:
        """A backup that did not run (the Docker image's overlap guard): the /fail ping with
        ``why`` as its body, and the webhook."""
        self.summary = why
        try:
            self._report("skipped", None)
        finally:
            log.removeHandler(self)

    def _report(self, status: str, code: Optional[int]) -> None:
        alerts = self.alerts or alerts_anyway(self.config_path)
        ended = time.time()
        if alerts.metrics_file and code is not None:
            kind = self.kind
            assert kind is not None          # (a code comes from end(), which needs a kind)
            try:
                write_metrics(alerts.metrics_file, kind, metric_samples(
                    kind, code, self.started, ended,
                    {**self.figures, **self.attention_figures, **self.gauges}, self.part),
                    self.part)
            except OSError as exc:
                log.warning("warning: cannot write the metrics file %s: %s",
                            alerts.metrics_file, exc.strerror or exc)
        if alerts.notify_url and (status != "success" or alerts.notify_on == "always"):
            self._send(alerts.notify_url, "", self._webhook(status, code, ended),
                       "application/json", "webhook")
        if alerts.healthcheck_url:
            self._send(alerts.healthcheck_url, "" if status == "success" else "/fail",
                       self._ping_body(code))

    def _send(self, url: Optional[str], suffix: str, body: Optional[bytes] = None,
              content_type: str = "text/plain; charset=utf-8",
              what: str = "health check ping") -> None:
        if not url or url in self.given_up:
            return
        why = deliver(with_suffix(url, suffix), body, content_type)
        if why:
            if not why.startswith("HTTP "):     # no answer: a dead server costs no more time
                self.given_up.add(url)
            log.warning("warning: %s to %s failed after %d tries (%s); the run's outcome is "
                        "unchanged", what, url_origin(url), NOTIFY_TRIES, why)

    def _headline(self, code: Optional[int]) -> str:
        of = f" of slice {self.part}" if self.part else ""
        return self.summary or f"{self.kind}{of} ended with exit code {code}"

    def _ping_body(self, code: Optional[int]) -> bytes:
        """The summary and what needs attention, then as many of the last failure lines as
        PING_BODY_MAX holds."""
        head = "".join(line + "\n" for line in [self._headline(code), *self.attention])
        room = PING_BODY_MAX - len(head.encode("utf-8", "replace"))
        tail: list[str] = []
        for line in reversed(self.last):
            room -= len(line.encode("utf-8", "replace")) + 1
            if room < 0:
                break
            tail.append(line + "\n")
        return (head + "".join(reversed(tail))).encode("utf-8", "replace")

    def _webhook(self, status: str, code: Optional[int], ended: float) -> bytes:
        import socket
        host = socket.gethostname()
        said = {"success": "succeeded", "failure": "failed", "skipped": "was skipped",
                "attention": "needs attention"}[status]
        assert self.kind is not None         # (a Monitor of no kind reports nothing)
        figures: dict[str, Any] = dict.fromkeys(FIGURES[self.kind], 0)
        figures.update(seconds=round(ended - self.started, 3), mb_per_s=0,
                       destination_objects=None, destination_bytes=None)
        figures.update(self.figures)
        figures.update(self.attention_figures)
        message = [self.summary] if self.summary else []
        message += self.attention + self.first[:MESSAGE_FAILURES]
        return json.dumps({
            "title": f"encrypted_s3_backup: {self.kind}"
                     f"{f' of slice {self.part}' if self.part else ''} {said} on {host}",
            "message": "\n".join(message or [self._headline(code)]),
            "tool": "encrypted_s3_backup", "version": __version__, "kind": self.kind,
            "status": status, "exit_code": code, "host": host, "slice": self.part or None,
            "started": iso_time(self.started), "ended": iso_time(ended),
            "summary": self.summary, **figures, "failures": self.first,
        }, ensure_ascii=False).encode("utf-8")


# =====================================================================================
# Driver: list -> plan -> jobs -> worker pool -> outcomes -> summary and exit code
# =====================================================================================

# --------------------------- pools: worker processes (or this one) running Batches of jobs

BATCH_FILES = 256                 # small files written together (one flush for all) ...
BATCH_BYTES = 8 * 1024 * 1024     # ... up to this many bytes per batch
NAMES_PER_TASK = 16               # encrypted names decoded per task in the pool


@dataclass(frozen=True)
class Options:
    """What the command line asks for (parse_args makes it, checked): the action and its
    options, under their flags' names (--dry-run: dry_run)."""

    config: Optional[str] = None             # --config PATH
    restore: bool = False                    # the action: one of these, or a backup
    verify: bool = False
    list: bool = False
    check_protection: bool = False
    report_skipped: Optional[str] = None     # --report-skipped WHY
    restore_deleted: bool = False
    restore_only: tuple[str, ...] = ()       # paths, folders, glob patterns
    as_of: Optional[AsOf] = None             # --as-of, read (parse_as_of) ...
    as_of_text: Optional[str] = None         # ... and as given
    versions: bool = False
    subset: Optional[Subset] = None          # --subset, read (parse_subset)
    slice: Optional[Subset] = None           # --slice I/N, read (parse_slice)
    repair: bool = False
    bwlimit: Optional[int] = None            # --bwlimit (in settings too)
    no_thaw: bool = False
    dry_run: bool = False
    allow_mass_delete: bool = False
    expire_versions: bool = False
    allow_mass_change: bool = False
    json: bool = False
    quiet: bool = False
    verbose: bool = False
    settings: dict[str, Any] = field(default_factory=dict, hash=False)
    # ^ the values of the settings a flag sets (Setting.flag), by key: load_config's flags


@contextlib.contextmanager
def worker_pool(processes: int, config: Config) -> Iterator[Any]:
    """A pool of ``processes`` forked workers.  A worker that dies (killed, out of memory)
    stops the run with a clear error instead of leaving it waiting forever; on any error or
    interrupt the workers are stopped (they remove their temporary files on the way out).
    Inside, stop signals are deferred: the callers' loops call check_stop()."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    key_derived()           # (no thread inside OpenSSL when it forks)
    # Forked workers share this process's objects (the listings: hundreds of MB at a
    # million files) until they write to them, and a full garbage collection in a worker
    # writes to every container object it inherited.  Frozen, they are never visited.
    gc.freeze()
    give_back_memory()      # (compiling this script leaves freed heap every worker would copy)
    try:
        with deferred_stop():
            pool = ProcessPoolExecutor(processes, context, _init_worker, (config,))
            try:
                yield pool
                pool.shutdown()
            except BrokenProcessPool:
                stop_workers(pool)
                raise BackupError("a worker process died (killed, perhaps for lack of "
                                  "memory); what was done is safe: run again to finish") from None
            except BaseException:
                stop_workers(pool)
                raise
    finally:
        gc.unfreeze()


class _InThisProcess:
    """A pool of none: submit() runs the call at once in this process (one worker process
    is no worker process) and hands back its finished future."""

    @staticmethod
    def submit(function: Callable[..., R], *args: Any) -> Any:
        from concurrent.futures import Future
        future: Any = Future()
        try:
            future.set_result(function(*args))
        except Exception as exc:     # a stop (BaseException) goes straight up instead
            future.set_exception(exc)
        return future


@contextlib.contextmanager
def cpu_pool(processes: int, config: Config) -> Iterator[Any]:
    """Worker processes, or, for one process, this process itself as the worker."""
    global _WORKER
    if processes > 1:
        with worker_pool(processes, config) as pool:
            yield pool
        return
    key_derived()
    _WORKER = worker = _Worker(config)
    worker.runs_codecs()
    try:
        with deferred_stop():
            yield _InThisProcess()
    except BaseException:       # stopped: a thread of a batch may have been writing
        worker.discard_unfinished()
        raise


def run_in_pool(function: Callable[[_Worker, Any], R], items: list, processes: int,
                config: Config, on_result: Callable[[R], None]) -> None:
    """``function(worker, item)`` for every item on a pool of worker processes (here, for
    one process or one item), each result handed to ``on_result`` as it comes."""
    if not items:
        return
    processes = 1 if len(items) == 1 else min(processes, len(items))
    with cpu_pool(processes, config) as pool:
        queue, running = iter(items), set[Any]()
        while True:
            for item in itertools.islice(queue, 2 * processes - len(running)):
                running.add(pool.submit(in_worker, function, item))
            if not running:
                break
            done, running = wait_polling(running)
            for future in done:
                result, requests = future.result()
                merge_requests(requests)
                on_result(result)


def run_jobs(jobs: list[Job], processes: int, config: Config,
             on_outcome: Callable[[Outcome], None],
             warn: Callable[[str, str, str], None]) -> None:
    """Run the jobs: through the request scheduler when its storages are remote, else as
    Batches on ``processes`` workers; every Outcome to ``on_outcome``, every warning to
    ``warn``."""
    scheduler = RequestScheduler(config, processes, on_outcome, warn)
    if any(scheduler.takes(job) for job in jobs):
        scheduler.run(jobs)
        return
    batches = batch_small(job for job in jobs if job.scheduling in ("store", "fetch")) + \
        batches_of_one(job for job in jobs if job.scheduling not in ("store", "fetch"))

    def deliver(outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            on_outcome(outcome)
    run_in_pool(run_batch, batches, processes, config, deliver)


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def batch_small(jobs: Iterable[Job]) -> list[Batch]:
    """Group the jobs of small files into Batches, in path order (a batch then touches few
    folders); big ones stay single, in the order given, and go first."""
    jobs = list(jobs)
    single = [Batch((job,)) for job in jobs if job.size >= SMALL_FILE]
    batches, current, total = [], [], 0
    for job in sorted((job for job in jobs if job.size < SMALL_FILE), key=_job_path):
        current.append(job)
        total += job.size
        if len(current) >= BATCH_FILES or total >= BATCH_BYTES:
            batches.append(Batch(tuple(current), grouped=True))
            current, total = [], 0
    if current:
        batches.append(Batch(tuple(current), grouped=True))
    return single + batches


def batches_of_one(jobs: Iterable[Job]) -> list[Batch]:
    """One Batch per job."""
    return [Batch((job,)) for job in jobs]


def _apart(worker: _Worker, call_args: tuple[Callable[..., R], tuple]) -> R:
    call, args = call_args
    return call(*args)


def run_apart(config: Config, storages: Iterable[Storage], call: Callable[..., R],
              *args: Any) -> R:
    """``call(*args)`` in a short-lived helper process when a storage is remote, else here.

    Listing S3 loads boto3 and an S3 client, about 30 MB.  Workers are forked from this
    process and inherit all it holds, so listing here would cost that 30 MB once per worker
    on top of the client each worker makes for itself.
    """
    if not any(storage.remote for storage in storages):
        return call(*args)
    with worker_pool(1, config) as pool:
        done, _ = wait_polling([pool.submit(in_worker, _apart, (call, args))])
        result, requests = done.pop().result()
        merge_requests(requests)
        return result


# -------------------------- request scheduler: a remote destination's requests, on threads

REQUESTS_AHEAD = 4             # objects encoded or fetched ahead, per request in flight ...
BYTES_AHEAD = 64 * 1024 ** 2   # ... and at most this many bytes of them


class Fetched(NamedTuple):
    """An object the request scheduler read for a worker to decode, or the Outcome of
    failing to."""

    job: Job
    data: bytes = b""
    failure: Optional[Outcome] = None


class RequestScheduler:
    """Where the requests of a remote destination are made: ``requests_in_flight`` threads
    of this process, with one kept-alive connection per thread.  Worker processes do the CPU
    work (encoding, decoding) and the local files, and small objects travel between them and
    the request scheduler in memory: requests in flight cost a thread, not a process, and a
    worker needs no client at all (one still streams a big file itself).

    run() drives both: small uploads are encoded by workers and stored by the request
    scheduler; small objects to restore or verify are fetched by the request scheduler and
    decoded by workers; renames and removals are the request scheduler's alone (removals in
    groups: remove_many); the rest runs on the workers as Batches.  The threads are made
    after the workers fork.  """

    def __init__(self, config: Config, processes: int, on_outcome: Callable[[Outcome], None],
                 warn: Callable[[str, str, str], None]):
        # Workers only compute here: more of them than cores would only take memory.
        self.config, self.processes = config, min(processes, os.cpu_count() or 1)
        self.requests = config.requests_in_flight
        self.on_outcome, self.warn = on_outcome, warn
        self.worker = _Worker(config, requests=self.requests)   # storages, in this process
        self.pool: Any = None
        self.threads: Any = None
        self.running: dict[Any, tuple[str, Callable[[Any], None]]] = {}
        self.finished: queue.SimpleQueue = queue.SimpleQueue()   # futures, as they end
        self.busy = {"cpu": 0, "io": 0}
        self.ahead = 0                                      # bytes encoded or fetched
        self.to_store: collections.deque = collections.deque()    # Encoded
        self.fetched: list[Fetched] = []
        self.replaced: collections.deque = collections.deque()    # (key, path) to remove

    def takes(self, job: Job) -> bool:
        """Whether the request scheduler makes this job's requests: a small file's object on
        a remote destination, or a rename or removal there (a remote source, or a remote
        restore target, is left to the workers)."""
        dest = self.worker.dest
        return (dest is not None and dest.remote and job.size < SMALL_FILE and
                not any(self.worker.configured(role).remote for role in job.touches
                        if role != "dest"))

    def run(self, jobs: list[Job]) -> None:
        mine = [job for job in jobs if self.takes(job)]
        by_kind = {kind: [job for job in mine if job.scheduling == kind]
                   for kind in ("store", "fetch", "request", "remove")}
        work: Iterator[Batch] = iter(batch_small(by_kind["store"]) + batch_small(
            job for job in jobs if not self.takes(job)))
        fetches = iter(by_kind["fetch"])
        requests: Iterator[tuple[Callable[..., Any], tuple, Callable[[Any], None]]] = \
            itertools.chain(((_run_one, (self.worker, job), self.on_outcome)
                             for job in by_kind["request"]),
                            ((self._remove, (chunk,), self._deliver)
                             for chunk in chunks(by_kind["remove"], S3_DELETE_BATCH)))
        with cpu_pool(self.processes, self.config) as pool:
            from concurrent.futures import ThreadPoolExecutor
            pool.submit(int)        # the first task forks every worker: before any thread
            self.pool, self.threads = pool, ThreadPoolExecutor(self.requests)
            try:
                self._loop(work, fetches, requests)
            except Exception:
                self._remove_all_replaced()
                raise
            finally:
                self.threads.shutdown(wait=False, cancel_futures=True)

    def _remove_all_replaced(self) -> None:
        """A bug stops the run: the objects that new ones have replaced already are removed
        now, not left for the next run, so that no path keeps two live objects."""
        keys = [key for key, _ in self.replaced]
        self.replaced.clear()
        with contextlib.suppress(*FILE_FAILURES):
            self.worker.configured("dest").remove_many(keys)

    def _loop(self, work: Iterator[Batch], fetches: Iterator[Job],
              requests: Iterator[tuple[Callable[..., Any], tuple, Callable[[Any], None]]]
              ) -> None:
        """Keep ``requests`` in flight and every worker busy, fetching and encoding ahead
        no more than REQUESTS_AHEAD and BYTES_AHEAD allow, until everything is done."""
        work_left = fetches_left = requests_left = True
        while True:
            while self.busy["io"] < self.requests:
                if self.to_store:
                    encoded = self.to_store.popleft()
                    self.ahead -= len(encoded.data)
                    self._io(self._store, (encoded,), self.on_outcome)
                elif len(self.replaced) >= S3_DELETE_BATCH or (self.replaced and not (
                        work_left or self.busy["cpu"] or self.busy["io"])):
                    group = [self.replaced.popleft()
                             for _ in range(min(S3_DELETE_BATCH, len(self.replaced)))]
                    self._io(self._remove_replaced, (group,), self._warn_all)
                elif fetches_left and self._room():
                    job = next(fetches, None)
                    fetches_left = job is not None
                    if job is not None:
                        self._io(self._fetch, (job,), self._fetched)
                elif requests_left:
                    request = next(requests, None)
                    requests_left = request is not None
                    if request is not None:
                        self._io(*request)
                else:
                    break
            while self.busy["cpu"] < 2 * self.processes:
                if self.fetched and (self.busy["cpu"] < self.processes or not fetches_left
                                     or len(self.fetched) >= BATCH_FILES):
                    items = self.fetched[:BATCH_FILES]
                    del self.fetched[:BATCH_FILES]
                    self.ahead -= sum(len(item.data) for item in items)
                    self._cpu(decode_fetched, tuple((i.job, i.data) for i in items),
                              self._deliver)
                elif work_left and self._room():
                    batch = next(work, None)
                    work_left = batch is not None
                    if batch is not None and self.takes(batch.jobs[0]):
                        self._cpu(encode_uploads, batch.jobs, self._encoded)
                    elif batch is not None:
                        self._cpu(run_batch, batch, self._deliver)
                else:
                    break
            if not self.running:
                return
            for future in self._finished():
                kind, then = self.running.pop(future)
                self.busy[kind] -= 1
                result = future.result()
                if kind == "cpu":
                    result, requests_made = result
                    merge_requests(requests_made)
                then(result)

    def _finished(self) -> list[Any]:
        """The futures that have ended (at least one), checking for a stop meanwhile: a
        queue their callbacks fill, not concurrent.futures.wait(), which looks at every
        running future each time one ends."""
        while True:
            check_stop()
            try:
                first = self.finished.get(timeout=STOP_POLL_SECONDS)
                break
            except queue.Empty:
                continue
        ended = [first]
        with contextlib.suppress(queue.Empty):
            while True:
                ended.append(self.finished.get_nowait())
        return ended

    def _room(self) -> bool:
        """Whether more may be encoded or fetched ahead of the requests and the workers."""
        waiting = len(self.to_store) + len(self.fetched)
        return waiting < REQUESTS_AHEAD * self.requests and self.ahead < BYTES_AHEAD

    def _cpu(self, function: Callable[[_Worker, Any], Any], item: Any,
             then: Callable[[Any], None]) -> None:
        self._watch(self.pool.submit(in_worker, function, item), "cpu", then)

    def _io(self, function: Callable[..., Any], args: tuple, then: Callable[[Any], None]
            ) -> None:
        self._watch(self.threads.submit(function, *args), "io", then)

    def _watch(self, future: Any, kind: str, then: Callable[[Any], None]) -> None:
        self.running[future] = (kind, then)
        self.busy[kind] += 1
        future.add_done_callback(self.finished.put)

    def _deliver(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            self.on_outcome(outcome)

    def _warn_all(self, warnings: list[tuple[str, str]]) -> None:
        for path, message in warnings:
            self.warn("upload", path, message)

    def _encoded(self, results: tuple[list[Encoded], list[Outcome]]) -> None:
        encoded, failures = results
        self._deliver(failures)
        self.to_store.extend(encoded)
        self.ahead += sum(len(item.data) for item in encoded)

    def _fetched(self, fetched: Fetched) -> None:
        if fetched.failure is not None:
            self.on_outcome(fetched.failure)
        else:
            self.fetched.append(fetched)
            self.ahead += len(fetched.data)

    # -------------------------------------------------- in the request scheduler's threads

    def _store(self, encoded: Encoded) -> Outcome:
        """Store an encoded object, then keep what it replaces as versions; the rest of
        what it replaces is removed in groups (_remove_replaced)."""
        job = encoded.job
        try:
            self.worker.configured("dest").put(encoded.key, encoded.data)
        except FILE_FAILURES as exc:
            return failed(job, exc)
        outcome = Outcome(job.action, job.path, bytes_in=encoded.length,
                          bytes_out=len(encoded.data), key=encoded.key, md5=encoded.md5)
        self.replaced.extend((key, job.path) for key in job.replaces if key != encoded.key)
        return _replaced(self.worker, replace(job, replaces=()), outcome)

    def _remove_replaced(self, group: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Remove replaced objects; (path, warning) of each that stayed."""
        failures = self.worker.configured("dest").remove_many([key for key, _ in group])
        return [(path, f"stored, but its old object was not removed "
                       f"({describe(failures[key])}); the next run will")
                for key, path in group if key in failures]

    def _remove(self, jobs: list[Remove]) -> list[Outcome]:
        failures = self.worker.configured("dest").remove_many([job.old.key for job in jobs])
        return [failed(job, failures[job.old.key]) if job.old.key in failures
                else Outcome(job.action, job.path) for job in jobs]

    def _fetch(self, job: Union[Restore, Verify]) -> Fetched:
        try:
            with self.worker.configured("dest").open(job.obj.key) as stream:
                return Fetched(job, stream.read())
        except FILE_FAILURES as exc:
            return Fetched(job, failure=failed(job, exc))


# ----- listing helpers: the two listings, listed apart and decoded, and the password check

def backup_entries(dest: Storage, report: ListReport,
                   skip: Optional[Callable[[str], bool]] = None) -> Iterator[Entry]:
    """The backup objects (and version objects) among the files ``dest`` lists (less
    what ``skip`` drops, see Storage.list_files)."""
    return (entry for entry in dest.list_files(report, skip)
            if entry.key.endswith(NAME_SUFFIXES))


def list_objects(dest: Storage, report: ListReport) -> Listing:
    """Every backup object (and version object) on the destination: key, object size and
    storage class."""
    objects = Listing()
    for entry in backup_entries(dest, report):
        objects.append(*entry)
    return objects


def decode_listing(dest: Storage, objects: Listing, config: Config, report: ListReport,
                   each: Callable[[str, int, BackupName, str, int], None]) -> None:
    """``each(key, size, name, storage class, mtime)`` for the listed objects whose names
    decode; the others go into the report.  Encrypted names with per-object salts cost a
    key derivation each, so then they are decoded in the worker pool.

    When names are encrypted and none decodes while some look encrypted (sealed_name),
    the password (or cipher) is wrong: PasswordError, or a backup would upload everything
    again beside the old objects.
    """
    codec = config.codec
    bad: list[str] = []
    found = sealed = 0

    def take(decoded: Iterable[tuple[str, int, str, int, Union[BackupName, str]]]) -> None:
        nonlocal found, sealed
        for key, size, storage_class, mtime, name in decoded:
            if isinstance(name, BackupName):
                each(key, size, name, storage_class, mtime)
                found += 1
            else:
                bad.append(name)
                sealed += bool(codec.encrypt_filenames and sealed_name(key, codec))

    if codec.encrypt_filenames and codec.salt is None and len(objects) > 1:
        tasks = [tuple((objects.key(j), objects.sizes[j], objects.storage_class(j),
                        objects.mtimes[j]) for j in range(i, min(i + NAMES_PER_TASK, len(objects))))
                 for i in range(0, len(objects), NAMES_PER_TASK)]
        run_in_pool(decode_names, tasks, config.restore_processes, config, take)
    else:
        take((entry.key, entry.size, entry.storage_class, entry.mtime,
              parse_name(entry.key, codec)) for entry in objects)
    if sealed and not found:
        raise password_error(dest, codec, f"none of the {len(bad)} object names there "
                             "decrypts")
    report.bad_names += bad


def sealed_name(key: str, codec: Codec) -> bool:
    """Whether an object name looks like an encrypted one: base 36 for more bytes than a
    header (a name that does not decrypt then is a sign of a wrong password)."""
    stem = key[:-len(OBJECT_SUFFIX)]
    try:
        return len(b36_decode_bytes(stem)) > header_len(codec.encryption_type)
    except ValueError:
        return False


def read_backup(dest: Storage, objects: Listing, config: Config,
                report: ListReport) -> list[Stored]:
    """The backup objects listed on ``dest`` with their decoded names (see decode_listing)."""
    stored: list[Stored] = []
    decode_listing(dest, objects, config, report, lambda *listed: stored.append(
        stored_object(*listed)))
    return stored


def held_objects(dest: Storage, objects: Listing, config: Config,
                 report: ListReport) -> Listing:
    """The backup objects listed on ``dest`` (see decode_listing) as a Listing that gives
    each object's plaintext name where its key is not that name (an encrypted name)."""
    held = Listing()
    encrypted = config.codec.encrypt_filenames

    def hold(key: str, size: int, name: BackupName, storage_class: str, mtime: int) -> None:
        plain = encrypted and not is_plaintext_key(key, name)
        held.append(key, size, mtime, storage_class,
                    format_plain_name(name) + name_suffix(name) if plain else "")
    decode_listing(dest, objects, config, report, hold)
    return held


def _backup_path_ok(key: str, report: ListReport) -> bool:
    """A source path must come back out of a restore: keys an S3 source may hold ("a//b",
    "x/../y") or names with control characters are reported instead of backed up."""
    try:
        safe_relpath(key)
        return True
    except UnsafePathError:
        report.problems.append(f"cannot back up {key!r}: its path has empty, '.' or '..' "
                               "parts or control characters, which a restore refuses; "
                               "rename it")
        report.blind.append(key)
        return False


def source_filter(src: Storage, dest: Storage, ignore_regex: tuple[str, ...],
                  report: Optional[ListReport] = None, name_ignored: bool = False
                  ) -> Callable[[str], bool]:
    """What the source listing skips: ignore_regex, and the destination when it lies
    inside the source.  What ignore_regex skips is counted in ``report`` (and its keys
    kept there too, ``name_ignored``)."""
    ignore = [re.compile(p) for p in ignore_regex]
    nested = src.inside(dest)
    if nested == "":
        raise ConfigError(f"dest ({dest}) is the source ({src}) itself; choose a destination "
                          "outside the source")
    inner = None if nested is None else nested + "/"

    def skip(key: str) -> bool:
        if inner is not None and key.startswith(inner):
            return True
        if not any(p.match(key) for p in ignore):
            return False
        if report is not None:
            report.ignored += 1
            if name_ignored:
                report.ignored_keys.append(key)
        return True
    return skip


def source_listing(report: ListReport, src: Storage, dest: Storage,
                   ignore_regex: tuple[str, ...], name_ignored: bool = False,
                   part: Optional[Subset] = None) -> Iterator[Optional[Entry]]:
    """What a backup reads of its source: None once the source is there, then the files
    it lists that a restore could write back (see _backup_path_ok), with ``part`` (--slice)
    those of its slice: another slice's files are dropped before they are looked at (no
    stat), and not counted.  What it leaves out is counted in ``report`` (see
    source_filter)."""
    skip = source_filter(src, dest, ignore_regex, report, name_ignored)
    if part is not None:
        mine: Subset = part

        def skip_others(key: str, skip: Callable[[str], bool] = skip) -> bool:
            return not (key.endswith("/") or mine.owns(key)) or skip(key)
        skip = skip_others
    src.prepare(create=False)
    yield None
    for entry in src.list_files(report, skip):
        if _backup_path_ok(entry.key, report):
            yield entry


def object_listing(report: ListReport, dest: Storage, dry_run: bool,
                   part: Optional[Subset] = None
                   ) -> Iterator[Union[tuple[Union[bool, str], Optional[ObjectLock]], Entry]]:
    """What a backup reads of its destination: whether it exists, or "created" when this
    run made it (a dry run does not), with the lock its unchanged objects are kept under
    (kept_lock), then the backup objects it lists (see backup_entries), with ``part``
    (--slice) less those whose key, read as a plaintext name, has a path of another slice
    (counted in ``report.foreign``; an encrypted name has no dots to read it by, so it is
    judged once decrypted, see owned).  What killed runs left there is cleared first."""
    exists: Union[bool, str] = dest.prepare(create=False, missing_ok=True)
    if not exists and not dry_run:
        exists = dest.prepare(create=True) and "created"
    lock = None
    if exists:
        report.notes += dest.lock_notes()
        lock = dest.kept_lock()
    if exists and not dry_run:
        with contextlib.suppress(*FILE_FAILURES):     # housekeeping: never a reason to stop
            report.notes += dest.housekeeping()
    if exists:
        with contextlib.suppress(*FILE_FAILURES):     # nor is the destination's protection
            report.protection = dest.protection(probe=False)
    yield exists, lock
    if exists and part is None:
        yield from backup_entries(dest, report)
    elif exists and part is not None:
        mine: Subset = part

        def others(key: str) -> bool:
            """A plaintext name of another slice's path (not stat'ed, nor parsed)."""
            path = plain_key_path(key)
            if path is not None and not mine.owns(path):
                report.foreign += 1
                return True
            return False
        yield from backup_entries(dest, report, others)


LISTING_CHUNK = 4096      # entries a helper process sends at a time (see listed)


@contextlib.contextmanager
def listed(config: Config, apart: bool, report: ListReport,
           produce: Callable[..., Iterator[Any]], *args: Any) -> Iterator[Iterator[Any]]:
    """What ``produce(report, *args)`` yields, as it comes: made here, or, ``apart``, in a
    helper process (see run_apart), which sends it through a pipe LISTING_CHUNK entries at
    a time, each chunk with what was added to its own report meanwhile (added to
    ``report`` before the chunk's entries come out)."""
    if not apart:
        yield produce(report, *args)
        return
    reader, writer = multiprocessing.Pipe(duplex=False)
    try:
        with worker_pool(1, config) as pool:
            future = pool.submit(in_worker, _apart,
                                 (_send_listing, (produce, args, writer.fileno())))
            writer.close()                  # the helper has its copy: its end is the end
            try:
                yield _received(reader, future, report)
            finally:
                reader.close()              # a helper still sending stops (broken pipe)
    finally:
        writer.close()
        reader.close()


def _send_listing(produce: Callable[..., Iterator[Any]], args: tuple, fd: int) -> None:
    """In a helper process: send what ``produce`` yields through the pipe ``fd`` (see
    listed): its first value as it is, then Listing chunks of the entries, each with its
    report."""
    from multiprocessing.connection import Connection
    sink, report, chunk = Connection(fd, readable=False), ListReport(), Listing()
    try:
        listing = produce(report, *args)
        sink.send(next(listing))
        for entry in listing:
            chunk.append(*entry)
            if len(chunk) >= LISTING_CHUNK:
                sink.send((chunk, report.take()))
                chunk = Listing()
        sink.send((chunk, report.take()))
    finally:
        sink.close()


def _received(reader: Any, future: Any, report: ListReport) -> Iterator[Any]:
    """What a helper process sends (see _send_listing), as it comes; the helper's error,
    if it had one, once it has sent everything."""
    first = True
    while True:
        while not reader.poll(STOP_POLL_SECONDS):
            check_stop()
        check_stop()
        try:
            message = reader.recv()
        except EOFError:
            break
        if first:
            first = False
            yield message
            continue
        chunk, found = message
        report.add(found)
        yield from chunk
    done, _ = wait_polling([future])
    merge_requests(done.pop().result()[1])


def plan_run(config: Config, src: Storage, dest: Storage, dry_run: bool,
             expire_versions: bool = False, name_ignored: bool = False,
             part: Optional[Subset] = None) -> tuple[Plan, ListReport, Union[bool, str]]:
    """List both storages and plan the backup.  A storage that lists in key order
    (``ordered``) is walked as it lists, in plan order (in_plan_order); another, or one
    found not to be in order after all (it is listed again), is held as a Listing and
    sorted, and so are encrypted names.  The plan counts everything before anything is
    done: the guards see every count.  The last value: whether the destination is there,
    or "created" when this run made it.  With ``part`` (--slice), only the paths of that
    slice are planned, on both sides (see owned): the plan, and so the guards, count its
    share alone."""
    source_filter(src, dest, config.ignore_regex)      # its error before anything is done
    walked = {"src": src.ordered,
              "dest": dest.ordered and not config.codec.encrypt_filenames}
    day, moment = today(), now()
    while True:
        report = ListReport()
        try:
            # A remote storage is listed apart (see Storage.remote); with two local ones, the
            # source is, so that the walks of both run on two cores.
            with listed(config, src.remote or not dest.remote, report, source_listing, src,
                        dest, config.ignore_regex, name_ignored, part) as source:
                next(source)                 # the source is there: now the destination
                with listed(config, dest.remote, report, object_listing, dest,
                            dry_run, part) as objects:
                    there, lock = next(objects)
                    if not dry_run:          # (after both forks) while both are walked
                        config.codec.key_ahead()
                    return plan_walked(
                        listed_in_plan_order(source, walked["src"], "src", report, dest,
                                             config),
                        owned(listed_in_plan_order(objects, walked["dest"], "dest", report,
                                                   dest, config), part, report),
                        day, config.deleted_keep_days, report.blind,
                        config.versions_keep_days, moment, expire_versions,
                        lock), report, there
        except OutOfOrder as exc:
            log.info("note: %s does not list in key order: its listing is sorted here "
                     "instead", src if exc.side == "src" else dest)
            walked[exc.side] = False


def owned(objects: Iterator[tuple[str, Stored]], part: Optional[Subset], report: ListReport
          ) -> Iterator[tuple[str, Stored]]:
    """The objects (plan key, object) of the paths of slice ``part`` (all without one); the
    others are counted in ``report.foreign``.  Every name is decoded first, so an encrypted
    name is judged by its path."""
    if part is None:
        yield from objects
        return
    for item in objects:
        if part.owns(item[1].name.path):
            yield item
        else:
            report.foreign += 1


def listed_in_plan_order(listing: Iterator[Entry], walked: bool, side: str,
                         report: ListReport, dest: Storage, config: Config
                         ) -> Iterator[tuple[str, Any]]:
    """One side of plan_run: source files ("src") or backup objects ("dest") with their
    plan keys, in plan order, walked as listed or held and sorted."""
    if walked and side == "src":
        return in_plan_order(listed_files(listing), side)
    if walked:
        return in_plan_order(listed_objects(listing, config.codec, report), side)
    held = Listing()
    for entry in listing:
        held.append(*entry)
    if side == "src":
        return held.files_in_order()
    return held_objects(dest, held, config, report).objects_in_order()


def password_error(dest: Storage, codec: Codec, tried: str) -> PasswordError:
    """The one line of a run refused for its password; ``tried``: what did not open."""
    return PasswordError(
        f"the backup in {dest} does not open with this encryption_password and "
        f"encryption_type '{codec.encryption_type}': {tried}; set the password "
        "(ENCRYPTION_PASSWORD) and encryption_type (ENCRYPTION_TYPE) the backup was made "
        "with. If they are right, those objects were damaged or planted by someone who can "
        "write there: on a versioned bucket, --check-protection and --verify --as-of DATE "
        "(a moment before the damage) tell, and docs/SECURITY.md says how to recover. "
        "Nothing was done")


def name_decrypted(obj: Stored) -> bool:
    """Whether the object's name was decrypted (not read as a plaintext name): that took
    the password."""
    return obj.object_key is not None and not is_plaintext_key(obj.object_key, obj.name)


def check_password(config: Config, dest: Storage, objects: Iterable[Stored], listed: int
                   ) -> None:
    """Before a backup, restore or verify does anything: PasswordError when the password
    (or encryption_type) is not the backup's, whose ``listed`` objects include ``objects``.
    One object that opens proves it right: a name that was decrypted, else one of the
    smallest or oldest objects (Candidates), read whole and authenticated.  It is wrong
    only when PASSWORD_TRIES of them fail and none opens, or every object there is fails:
    damaged (or planted) objects, even all the smallest, are not enough while an older
    one opens.  An object that cannot be read (archived, network, gone) proves nothing;
    with nothing proved the run goes on, saying so.  Costs a GET, or a few (at most
    2 x PASSWORD_CANDIDATES) when objects fail."""
    codec = config.codec
    if not codec.encrypt or not listed:
        return
    candidates = Candidates()
    for obj in objects:
        if codec.encrypt_filenames and name_decrypted(obj):
            return
        candidates.offer(obj)
    etype = codec.encryption_type
    tries = [o for o in candidates.best() if header_len(etype) < o.size <= PASSWORD_READ_MAX]
    if tries:
        key_derived()                # (the configured salt's key, derived ahead: once)
        opened, failed = run_apart(config, (dest,), try_password, dest, codec, tries)
        if opened:
            if failed:
                log.info("note: %d of the objects tried in %s do not authenticate with a "
                         "password that opens others: damaged, or planted by someone who can "
                         "write there (--verify names them)", failed, dest)
            return
        if failed >= PASSWORD_TRIES or failed == listed:
            raise password_error(dest, codec, "its only object does not authenticate"
                                 if listed == 1 else f"none of the {failed} smallest and "
                                 "oldest objects tried authenticates")
    log.info("note: the password was not checked before starting: no object of the backup "
             "could be read for it (archived, too large or unreachable)")


def try_password(dest: Storage, codec: Codec, objects: list[Stored]) -> tuple[bool, int]:
    """Authenticate ``objects`` one at a time until one opens: whether one did, and how
    many failed before.  One that cannot be read is skipped."""
    failed = 0
    for obj in objects:
        try:
            blob = dest.read(obj.key, obj.size + 1)
        except FILE_FAILURES:
            continue
        if len(blob) != obj.size:        # rewritten since it was listed
            continue
        try:
            open_with(codec, blob)
            return True, failed
        except IntegrityError:
            failed += 1
    return False, failed


def slice_words(part: Optional[Subset]) -> str:
    """How a run's lines name its slice (--slice): " (slice I/N ...)", or "" without one."""
    if part is None:
        return ""
    via = f", from {part.via}" if part.via else ""
    return f" (slice {part}{via}: its share of the paths only)"


def survey_restore(dest: Storage, moment: Optional[int] = None
                   ) -> tuple[Listing, ListReport, Optional[dict[str, str]]]:
    """Check the destination is there and list its backup objects; with ``moment`` and a
    destination that keeps versions (S3 with versioning), its objects as they stood then,
    from its own versions, and the version id of each (else None)."""
    dest.prepare(create=False)
    report = ListReport()
    if moment is None or not dest.versioning():
        return list_objects(dest, report), report, None
    objects, versions = Listing(), {}
    for entry, version in dest.list_versions(moment, report):
        if entry.key.endswith(NAME_SUFFIXES):
            objects.append(*entry)
            versions[entry.key] = version
    return objects, report, versions


def open_backup(config: Config, decodes: bool = True, empty_ok: bool = False,
                as_of: Optional[AsOf] = None, listing: bool = False
                ) -> tuple[Storage, list[Stored], list[str]]:
    """For restore, verify and list: the destination, its objects, and the problems met
    reading it (each already reported; an object name that does not decode is one).
    ``decodes``: objects will be decoded, so the key is derived ahead (key_ahead).  A
    destination without backup objects is a NothingSelectedError (a typo in dest), or,
    ``empty_ok``, a warning.  With ``as_of``, a destination that keeps versions is read as
    it stood then (survey_restore): what a stolen key deleted or overwrote since comes
    back, and the objects are read in those versions (pin).  ``listing``: for --list,
    whose standard output is the listing alone."""
    dest = make_storage(config.section("dest"))
    if decodes and not dest.remote:
        config.codec.key_ahead()         # while the objects are listed here ...
    objects, report, versions = run_apart(config, (dest,), survey_restore, dest,
                                          as_of.moment if as_of else None)
    if versions is not None:
        dest.pin(versions)
        (log.debug if listing else log.info)("as of then: the destination as it stood, from the bucket's own versions "
                 "(%d objects), then its version objects and deletion dates", len(versions))
    if decodes and dest.remote:
        config.codec.key_ahead()         # ... or, after run_apart's fork, while names decode
    stored = read_backup(dest, objects, config, report)
    problems = report.problems + report.bad_names
    for problem in problems:
        log.error("FAILED listing: %s", problem)
    if not stored and not problems:
        empty = (f"dest {dest} holds no backup objects: check dest's local_path, s3_bucket "
                 "and base_path (environment DEST_LOCAL_PATH, DEST_S3_BUCKET, DEST_BASE_PATH)")
        if not empty_ok:
            raise NothingSelectedError(empty)
        log.warning("warning: %s", empty)
    return dest, stored, problems


# -------------------- archive thaws: what is in GLACIER or DEEP_ARCHIVE, and asking for it

# How long AWS says a thaw takes, by storage class and tier (Deep Archive has no Expedited)
THAW_DELAYS = {("GLACIER", "Expedited"): "1-5 minutes", ("GLACIER", "Standard"): "3-5 hours",
               ("GLACIER", "Bulk"): "5-12 hours", ("DEEP_ARCHIVE", "Standard"): "within 12 hours",
               ("DEEP_ARCHIVE", "Bulk"): "within 48 hours"}


def tier_for(storage_class: str, tier: str) -> str:
    """The tier to ask for: Deep Archive has no Expedited tier; Standard is its fastest."""
    return "Standard" if storage_class == "DEEP_ARCHIVE" and tier == "Expedited" else tier


def thaw_delay(classes: Iterable[str], tier: str) -> str:
    """"Bulk, typically within 48 hours": the tier and delay of each class, slowest last."""
    present = sorted(set(classes), key=ARCHIVE_CLASSES.index)
    return "; ".join(f"{tier_for(c, tier)}, typically {THAW_DELAYS[c, tier_for(c, tier)]}"
                     + (f" for {c}" if len(present) > 1 else "") for c in present)


def request_each(request: Callable[..., R], calls: list[tuple], threads: int
                 ) -> list[Union[R, str]]:
    """``request(*call)`` for each call, ``threads`` at a time: its answer, or why it
    failed."""
    def answer(call: tuple) -> Union[R, str]:
        try:
            return request(*call)
        except FILE_FAILURES as exc:
            return describe(exc)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max(1, min(threads, len(calls)))) as pool:
        return list(pool.map(answer, calls))


def thaw_states(dest: Storage, keys: list[str], threads: int) -> list[Union[Thaw, str]]:
    """thaw_state() of each key, ``threads`` requests at a time: a Thaw, or why it failed."""
    return request_each(dest.thaw_state, [(key,) for key in keys], threads)


def send_thaws(dest: Storage, asks: list[tuple[str, str]], days: int, threads: int
               ) -> list[Union[bool, str]]:
    """thaw() of each (key, tier), ``threads`` requests at a time: True when asked now,
    False when a thaw was under way already, or why it failed."""
    return request_each(dest.thaw, [(key, days, tier) for key, tier in asks], threads)


@dataclass
class LeftInArchive:
    """What a restore or verify could not read because it is in an archive storage class."""

    requested: int = 0      # thaws asked for by this run
    thawing: int = 0        # thaws under way already (asked for earlier)
    left: int = 0           # not asked for (--no-thaw, or --dry-run: would be asked for)
    delay: str = ""         # the tiers and their typical delays (thaw_delay)
    failed: list[Outcome] = field(default_factory=list)   # state or request failures

    def __bool__(self) -> bool:
        return bool(self.requested or self.thawing or self.left)


def readable_now(config: Config, dest: Storage, chosen: list[Stored],
                 args: Options) -> tuple[list[Stored], LeftInArchive]:
    """Of the objects a restore or verify reads, those readable now: every one not in an
    archive class, and the archived ones thawed.  One HeadObject per archived object tells
    which; each archived one not thawing yet is asked to thaw (one RestoreObject: the count
    is printed first), or only counted with --dry-run or --no-thaw."""
    archived = [o for o in chosen if is_archived(o)]
    waiting = LeftInArchive()
    if not archived:
        return chosen, waiting
    states = run_apart(config, (dest,), thaw_states, dest, [o.key for o in archived],
                       config.requests_in_flight)
    thawed, asks = set(), []
    for obj, state in zip(archived, states):
        if isinstance(state, str):
            waiting.failed.append(Outcome("thaw", obj.name.path, error=state))
        elif state.state == "thawed":
            thawed.add(id(obj))
        elif state.state == "thawing":
            waiting.thawing += 1
        else:
            asks.append(obj)
    log.info("%d of them in an archive storage class: %d thawed, %d thawing, %d not asked "
             "for yet", len(archived), len(thawed), waiting.thawing, len(asks))
    waiting.delay = thaw_delay((o.storage_class for o in asks), config.thaw_tier)
    if asks and (args.dry_run or args.no_thaw):
        waiting.left = len(asks)
    elif asks:
        log.info("requesting %d objects from the archive (%s), readable for %d days once "
                 "thawed", len(asks), waiting.delay, config.thaw_days)
        answers = run_apart(config, (dest,), send_thaws, dest,
                            [(o.key, tier_for(o.storage_class, config.thaw_tier)) for o in asks],
                            config.thaw_days, config.requests_in_flight)
        for obj, answer in zip(asks, answers):
            if isinstance(answer, str):
                waiting.failed.append(Outcome("thaw", obj.name.path, error=answer))
            elif answer:
                waiting.requested += 1
            else:
                waiting.thawing += 1
    return [o for o in chosen if not is_archived(o) or id(o) in thawed], waiting


def report_waiting(waiting: LeftInArchive, args: Options) -> None:
    """The lines that end a restore or verify that left objects in the archive."""
    again = "; run the same command again later"
    if waiting.requested:
        log.info("%d objects requested from the archive (%s)%s", waiting.requested,
                 waiting.delay, again, extra={"summary": True})
    if waiting.thawing:
        log.info("%d objects are still thawing (asked for earlier)%s", waiting.thawing, again,
                 extra={"summary": True})
    if waiting.left and args.dry_run:
        log.info("would request %d objects from the archive (%s)", waiting.left, waiting.delay,
                 extra={"summary": True})
    elif waiting.left:
        log.info("%d objects are in the archive and were not requested (--no-thaw)",
                 waiting.left, extra={"summary": True})


def read_outcome(failed: int, waiting: LeftInArchive) -> int:
    """The exit code of a restore or verify: failures first, then what waits on a thaw."""
    return EXIT_FAILED if failed else EXIT_THAWING if waiting else EXIT_OK


# ------------------------------- commands: backup, restore, verify, check-protection, list

def run_backup(config: Config, args: Options) -> int:
    src = make_storage(config.section("src"), source=True)
    dest = make_storage(config.section("dest"), reap=True, lock=config.object_lock)
    if config.object_lock and not (config.dest and config.dest.s3_bucket):
        raise ConfigError("object_lock_mode and object_lock_days (environment OBJECT_LOCK_MODE "
                          "and OBJECT_LOCK_DAYS) lock S3 objects, and dest is a local folder; "
                          "unset both, or back up to a bucket with Object Lock")
    part = args.slice
    log.info("backup %s -> %s%s", src, dest, slice_words(part))
    for warning in archive_warnings(config):
        log.warning("warning: %s", warning)
    plan, report, there = plan_run(config, src, dest, args.dry_run, args.expire_versions,
                                   name_ignored=args.verbose, part=part)
    check_password(config, dest, plan.candidates, plan.objects)
    if plan.objects == 0 and not report.foreign and (plan.uploads or there == "created"):
        # A typo in s3_bucket, local_path or base_path starts a second backup: say so, even
        # with --quiet (a first run says it once).
        log.info("note: %s %s: a new backup starts there (if you meant an existing one, "
                 "check dest's s3_bucket, local_path and base_path)", dest,
                 "did not exist and was created" if there == "created" else
                 "holds no backup objects" if there else "does not exist (a backup creates it)",
                 extra={"summary": True})
        if plan.uploads and config.codec.encrypt and config.codec.salt is None:
            log.info("note: no encryption_salt is set, so every object derives its own key: "
                     "about 0.1 s of CPU per file with aes (0.2 s with cha), in backups and "
                     "restores alike. Set one once and keep it (ENCRYPTION_SALT=$(python3 "
                     "generate_salt.py), or encryption_salt in the config file): the key is "
                     "then derived once per run")
    for note in report.notes:
        log.info("note: %s", note)
    if report.protection is not None:
        log.info("destination %s", report.protection.summary(),
                 extra={"gauges": report.protection.gauges()})
    for key in report.ignored_keys:
        log.info("ignored %s: ignore_regex matches it", show(key))
    for problem in report.problems:
        log.error("FAILED listing: %s", problem)
    for bad in report.bad_names:     # not ours, or damaged: left alone, never counted as ours
        log.warning("warning: ignored %s", bad)
    history = config.versions_keep_days
    if not args.allow_mass_delete:
        check_mass_delete(plan)
    if not args.allow_mass_change:
        check_mass_change(plan, bool(history))
    uploads = sorted(plan.uploads, key=lambda u: -u.size)     # the longest work starts first
    jobs: list[Job] = [*uploads, *plan.renames, *plan.marks, *plan.removes, *plan.extends]
    tally = Tally(args.verbose, files=len(jobs), size=sum(u.size for u in uploads),
                  progress=not args.quiet)
    versions_kept = sum(len(u.versions) for u in uploads) + sum(
        r.why == "keep version" for r in plan.renames)
    versions_expired = sum(r.why == "expire version" for r in plan.removes)
    if args.dry_run:
        for job in jobs:
            log.info("would %s %s", show(job.action), show(job.path))
        log.info("dry run: %d to upload, %d unchanged, %d to rename, %d to remove, up to %d "
                 "old contents to keep as versions, %d versions to expire; nothing was "
                 "changed", len(plan.uploads), plan.unchanged, len(plan.renames) + len(plan.marks),
                 len(plan.removes), versions_kept, versions_expired, extra={"summary": True})
        log_requests()
        log_archived(plan)
        return EXIT_FAILED if report.problems else EXIT_OK
    holdings = DestinationTotals(plan)

    def on_outcome(outcome: Outcome) -> None:
        holdings.add(outcome)
        tally.add(outcome)
    run_jobs(jobs, config.backup_processes, config, on_outcome, tally.warn)
    tally.failed += len(report.problems)      # each a "FAILED listing" line: counted too
    tally.summary("backup", [("unchanged", plan.unchanged), ("skipped", report.skipped),
                             ("ignored", report.ignored)],
                  destination=holdings.figures(), part=part)
    log_archived(plan)
    mass_change = bool(history) and is_mass(plan.changed, plan.live) and \
        not args.allow_mass_change
    if mass_change:        # done, and safe (history), but someone must look: exit code 5
        log.warning("warning: %d of %d backed-up files changed in this run (files encrypted "
                    "or rewritten in place?); their previous contents are kept as versions "
                    "for %d days: check the source before then, and restore with --as-of "
                    "if it was not wanted (exit code %d; --allow-mass-change when a change "
                    "like this is expected)", plan.changed, plan.live, history, EXIT_ATTENTION,
                    extra={"attention": {"mass_change_files": plan.changed}})
    log_versions(plan, history, args.expire_versions, versions_expired)
    if tally.failed or report.problems:
        return EXIT_FAILED
    return EXIT_ATTENTION if mass_change else EXIT_OK


def log_versions(plan: Plan, history: int, strict: bool, expired_now: int) -> None:
    """What became of the versions earlier runs kept, when it is not what versions_keep_days
    alone would say: kept longer (their own days), or removed by --expire-versions."""
    if strict and expired_now:
        log.info("removed %d version objects: --expire-versions applied versions_keep_days %d "
                 "to every version", expired_now, history, extra={"summary": True})
    if plan.outliving:
        log.info("note: %d version objects are kept longer than versions_keep_days (%d) says: "
                 "each keeps the days it was kept under (versions from before stamps: while "
                 "history is off); --expire-versions applies versions_keep_days to them",
                 plan.outliving, history)


def log_archived(plan: Plan) -> None:
    """What a backup left undone because objects are archived (see plan_backup)."""
    if plan.unkept:
        log.info("note: %d old contents were removed, not kept as versions: their objects "
                 "are in an archive storage class, which cannot be renamed", plan.unkept)


def run_restore(config: Config, args: Options) -> int:
    dest, stored, problems = open_backup(config, decodes=not args.dry_run, as_of=args.as_of)
    check_password(config, dest, stored, len(stored))
    target = restore_storage(config)
    only = tuple(args.restore_only or ())
    chosen = select_for_restore(stored, args.restore_deleted, only, args.as_of)
    if stored and not problems:    # (a listing that failed in part may miss the paths)
        check_selection(stored, chosen, only, args.as_of, args.as_of_text or "",
                        "" if args.restore_deleted else "--restore-deleted")
    if args.slice:                 # (its share may be empty: then it restores nothing)
        chosen = select_subset(chosen, args.slice)
    when = f" as of {args.as_of_text}" if args.as_of else ""
    log.info("restore %s -> %s: %d files%s%s", dest, target, len(chosen), when,
             slice_words(args.slice))
    chosen, waiting = readable_now(config, dest, chosen, args)
    if args.dry_run:
        for obj in chosen:
            log.info("would restore %s", show(obj.name.path))
        for failure in waiting.failed:
            log.error("FAILED %s %s: %s", failure.action, show(failure.path), failure.error)
        log_requests()
        report_waiting(waiting, args)
        return EXIT_FAILED if problems or waiting.failed else EXIT_OK
    target.prepare(create=True)
    tally = Tally(args.verbose, files=len(chosen), size=sum(o.size for o in chosen),
                  progress=not args.quiet)
    for failure in waiting.failed:
        tally.add(failure)
    run_jobs([Restore(o) for o in chosen], config.restore_processes, config, tally.add,
             tally.warn)
    tally.failed += len(problems)             # each a "FAILED listing" line: counted too
    tally.summary("restore", destination=(len(stored), sum(o.size for o in stored)),
                  part=args.slice)
    report_waiting(waiting, args)
    return read_outcome(tally.failed, waiting)


def run_verify(config: Config, args: Options) -> int:
    dest, stored, problems = open_backup(config, as_of=args.as_of)
    check_password(config, dest, [o for o in stored if not o.name.mark], len(stored))
    src = repair_source(config) if args.repair else None
    if args.as_of:           # what a restore as of then restores
        then = select_for_restore(stored, False, (), args.as_of)
        if stored and not problems:
            check_selection(stored, then, (), args.as_of, args.as_of_text or "")
        stored = then
    stored = sorted((o for o in stored if not o.name.mark), key=lambda o: o.name.path)
    # ^ deletion marks hold no content to check
    part = args.slice or args.subset     # (--subset: the older name, and P% of the objects)
    chosen = select_subset(stored, part) if part else stored
    skipped = len(stored) - len(chosen)
    via = f", from {part.via}" if part and part.via else ""
    which = f" ({'slice' if args.slice else 'subset'} {part}{via}: {len(chosen)} checked, " \
        f"{skipped} skipped)" if part else ""
    which += f" as of {args.as_of_text}" if args.as_of else ""
    log.info("verify %s: %d objects%s", dest, len(stored), which)
    chosen, waiting = readable_now(config, dest, chosen, args)
    tally = Tally(args.verbose, ok_lines=not args.quiet, files=len(chosen),
                  size=sum(o.size for o in chosen), progress=not args.quiet)
    for failure in waiting.failed:
        tally.add(failure)
    damaged: set[str] = set()

    def on_outcome(outcome: Outcome) -> None:
        tally.add(outcome)
        if outcome.damaged:
            damaged.add(outcome.damaged)
    run_jobs([Verify(o) for o in chosen], config.restore_processes, config, on_outcome,
             tally.warn)
    if src is not None and damaged:
        repair(config, src, [o for o in chosen if o.key in damaged], tally)
    tally.failed += len(problems)
    tally.summary("verify", [("skipped", skipped)], out_word="checked",
                  destination=(len(stored), sum(o.size for o in stored)), part=args.slice)
    report_waiting(waiting, args)
    return read_outcome(tally.failed, waiting)


def run_check_protection(config: Config, args: Options) -> int:
    """--check-protection: what keeps dest's files from keys that can write to it, a line
    per fact, then the verdict; EXIT_UNPROTECTED unless versions are kept and these keys
    cannot destroy them."""
    dest = make_storage(config.section("dest"))
    if not dest.prepare(create=False, missing_ok=True):
        raise StorageError(f"{dest} does not exist: check dest's settings")
    found = dest.protection()
    if found is None:
        log.error("NOT protected: %s is a folder, and whoever can write to it can delete "
                  "or overwrite everything it holds; for protection back up to an S3 bucket "
                  "with versioning and Object Lock (README: Stolen keys and ransomware)", dest)
        return EXIT_UNPROTECTED
    log.info("protection of %s:", dest)
    for line in found.lines():
        log.info("%s", line)
    if found.kept:
        log.info("note: the probe %s stays until its retention ends (a few bytes; the next "
                 "check tries it again)", found.kept)
    if found.versioning and found.expiry == 0:
        log.warning("warning: no lifecycle rule expires non-current versions, so the bucket "
                    "keeps every version ever written and grows without bound: add one with "
                    "NoncurrentVersionExpiration (README: Stolen keys and ransomware)")
    if found.safe():
        log.info("protected: the bucket keeps versions and these keys cannot destroy them",
                 extra={"summary": True})
        return EXIT_OK
    fix = ("turn versioning on" if found.versioning != "Enabled" else
           "turn Object Lock on with a default retention, or deny these keys "
           "s3:DeleteObjectVersion")
    log.error("NOT protected: an attacker with these keys could destroy the backup; %s "
              "(README: Stolen keys and ransomware)", fix)
    return EXIT_UNPROTECTED


def repairable(src: Storage, obj: Stored) -> str:
    """Why a damaged object cannot be made again from its source file, or "" when it can:
    it must be a current object (not deleted, not a version: their content is not the
    file's now), and the file must still be the one its name describes: size and mtime,
    then the MD5 of its content (read here)."""
    name = obj.name
    if name.deleted or name.version:
        return "a deleted file's object or a version holds no current content to upload"
    try:
        entry = src.stat(name.path)
    except MissingError:
        return "its source file is gone"
    if not _same_file(name, entry):
        return "its source file changed since it was backed up (a backup uploads it)"
    digest = hashlib.md5()
    with src.open(name.path) as stream:
        for chunk in _chunks(stream):
            digest.update(chunk)
    if digest.digest() != name.md5:
        return ("its source file's content changed since it was backed up (same size and "
                "mtime; a backup does not see it: touch the file)")
    return ""


def repair_source(config: Config) -> Storage:
    """The source --repair reads, checked there before the verify starts."""
    src = make_storage(config.section("src"), source=True)
    src.prepare(create=False)
    return src


def repair(config: Config, src: Storage, damaged: list[Stored], tally: Tally) -> None:
    """--verify --repair: make the objects a verify found damaged again from their source
    files where those are still what the names describe (repairable), as a backup uploads
    a file: the new object first, then the damaged one removed (Upload.replaces).  Each
    repair takes back its verify failure from ``tally``; what cannot be repaired is said
    (its failure stands)."""
    why_not = request_each(repairable, [(src, obj) for obj in damaged], config.requests_in_flight)
    jobs: list[Job] = []
    for obj, why in zip(damaged, why_not):
        if why:
            log.error("FAILED repair %s: not repaired: %s", show(obj.name.path), why)
        else:
            jobs.append(Upload(obj.name.path, obj.name.size, obj.name.mtime,
                               replaces=(obj.key,)))
    log.info("repair: %d of the %d damaged objects uploaded again from %s", len(jobs),
             len(damaged), src)

    def on_outcome(outcome: Outcome) -> None:
        if outcome.error:    # one line more for a failure already counted
            log.error("FAILED repair %s: %s", show(outcome.path), outcome.error)
            return
        tally.failed -= 1
        tally.add(replace(outcome, action="repair"))
    run_jobs(jobs, config.backup_processes, config, on_outcome, tally.warn)


def object_kind(name: BackupName) -> str:
    return "version" if name.version else "deleted" if name.deleted else "live"


def add_classes(config: Config, dest: Storage, chosen: list[Stored], rows: list[dict]
                ) -> list[str]:
    """Give the rows of objects outside STANDARD their "storage_class", and those in an
    archive class their "thaw" state ("archived", "thawing", "thawed", with
    "thawed_until"): one HeadObject each.  Returns the failures."""
    for obj, row in zip(chosen, rows):
        if obj.storage_class:
            row["storage_class"] = obj.storage_class
    archived = [(o, row) for o, row in zip(chosen, rows) if is_archived(o)]
    states = run_apart(config, (dest,), thaw_states, dest, [o.key for o, _ in archived],
                       config.requests_in_flight) if archived else []
    failures = []
    for (obj, row), state in zip(archived, states):
        if isinstance(state, str):
            failures.append(f"cannot tell the thaw state of {show(obj.name.path)}: {state}")
            log.error("FAILED listing: %s", failures[-1])
        else:
            row["thaw"], row["thawed_until"] = state.state, state.until or None
    return failures


def run_list(config: Config, args: Options) -> int:
    only = tuple(args.restore_only or ())
    dest, stored, problems = open_backup(config, decodes=False,
                                         empty_ok=not (only or args.as_of), as_of=args.as_of,
                                         listing=True)
    if args.versions:        # every object, oldest first per path (marks applied)
        chosen = sorted((o for group in by_path(o for o in stored
                                                if matches_only(o.name.path, only)).values()
                         for o in apply_marks(group)[0]),
                        key=lambda o: (o.name.path, o.name.mtime, o.name.deleted == 0,
                                       gone_moment(o.name)))
    else:
        chosen = select_for_restore(stored, True, only, args.as_of)
    if stored and not problems and (only or args.as_of):
        check_selection(stored, chosen, only, args.as_of, args.as_of_text or "")
    rows: list[dict[str, Any]] = [
        {"path": o.name.path, "size": o.name.size, "mtime": o.name.mtime,
         "deleted": o.name.deleted or None} for o in chosen]
    problems += add_classes(config, dest, chosen, rows)
    if args.versions:
        for row, obj in zip(rows, chosen):
            row["kind"] = object_kind(obj.name)
            if obj.name.version:
                row["replaced"], row["deleted"] = replaced_on(obj.name) or None, None
                stamp = read_stamp(obj.name.deleted)
                if stamp is not None:
                    row["replaced_at"] = datetime.datetime.fromtimestamp(stamp[0]).strftime(
                        "%Y-%m-%dT%H:%M:%S") if stamp[0] < 2 ** 37 else None   # (as --as-of)
                    row["kept_days"] = stamp[1]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=1))
    else:
        for row in rows:
            when = datetime.datetime.fromtimestamp(row["mtime"]).strftime("%Y-%m-%d %H:%M:%S") \
                if row["mtime"] < 2 ** 37 else str(row["mtime"])
            deleted = f"  deleted {row['deleted']}" if row["deleted"] else ""
            if row.get("replaced"):
                deleted = f"  version, replaced {row.get('replaced_at') or row['replaced']}"
            tier = f"  [{row['storage_class']}" if row.get("storage_class") else ""
            if row.get("thaw"):
                tier += f", {row['thaw']}" + (f" until {row['thawed_until']}"
                                              if row.get("thawed_until") else "")
            print(f"{row['size']:>14}  {when}  {show(row['path'])}{deleted}"
                  + (tier + "]" if tier else ""))
    return EXIT_FAILED if problems else EXIT_OK


# =====================================================================================
# Command line
# =====================================================================================

EPILOG = """examples:
  python3 encrypted_s3_backup.py                      back up src to dest (config.json)
  python3 encrypted_s3_backup.py --restore            restore live files to "restore"
  python3 encrypted_s3_backup.py --restore --restore-only docs/report.txt
  python3 encrypted_s3_backup.py --verify 2> errors.log
  python3 encrypted_s3_backup.py --verify --subset 3/7    one seventh of the objects (slice 3)
  SRC_LOCAL_PATH=/data DEST_LOCAL_PATH=/mnt/backup ENCRYPTION_PASSWORD=... \\
      python3 encrypted_s3_backup.py                  configuration from the environment

exit codes: 0 success, 1 some files failed (the rest were done), 2 configuration, usage
or storage error, or a restore or verify that selects nothing (nothing was done),
3 internal error (please report), 4 restore or verify did all it could read, the rest is
thawing from an archive storage class (run it again later), 5 a backup did everything but
needs attention: more than half of the files changed (their old contents are kept as
history: check the source), 6 --check-protection found dest unprotected (keys that can
write to it could destroy it), 130 interrupted."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="encrypted_s3_backup.py", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Back up files from a folder or S3 bucket to S3 or a folder, each file "
                    "compressed and encrypted into one object; restore, verify and list them.")
    parser.add_argument("--config", metavar="PATH",
                        help="JSON config file (default: config.json if it exists; environment "
                             "variables override its values)")
    action = parser.add_argument_group("action (default: back up src to dest)")
    group = action.add_mutually_exclusive_group()
    group.add_argument("--restore", action="store_true",
                       help="restore live files from dest to the restore storage")
    group.add_argument("--verify", action="store_true",
                       help="decrypt and check every object (deleted ones and versions too); "
                            "write nothing; failures on stderr")
    group.add_argument("--list", action="store_true",
                       help="list what the backup holds (path, size, mtime, deleted date) from "
                            "object names alone; a storage class other than STANDARD is "
                            "shown too, with the thaw state of archived objects (a HEAD "
                            "request each)")
    group.add_argument("--check-protection", action="store_true",
                       help="say what keeps dest from keys that can write to it: versioning, "
                            "Object Lock, a lifecycle rule for old versions, and (tried on "
                            "a tiny object of its own) whether these keys can destroy a "
                            "version; exits 6 when they could")
    group.add_argument("--report-skipped", metavar="WHY",
                       help="report a backup that did not run (the Docker image's overlap "
                            "guard uses it): the health check's /fail ping with WHY as its "
                            "body, and the webhook; nothing else is done")
    options = parser.add_argument_group("options")
    options.add_argument("--restore-deleted", action="store_true",
                         help="with --restore: include files marked deleted")
    options.add_argument("--restore-only", action="append", metavar="PATH",
                         help="with --restore or --list: only this path, folder or glob "
                              "pattern (repeatable)")
    options.add_argument("--as-of", metavar="WHEN",
                         help="with --restore, --verify or --list: the files as they were at "
                              "WHEN, YYYY-MM-DD (the end of that day) or YYYY-MM-DDTHH:MM[:SS], "
                              "local time; uses versions (versions_keep_days), deleted files "
                              "and, on a bucket with versioning, the bucket's own versions")
    options.add_argument("--versions", action="store_true",
                         help="with --list: every object of every path (live, deleted, "
                              "versions), oldest first")
    options.add_argument("--slice", metavar="I/N",
                         help="a backup, --restore or --verify of slice I of N of the paths "
                              "(a hash of each path: the same slices on every run and "
                              "machine, so N runs, I = 1..N, at once or not, do the whole "
                              "job once); auto/N takes I from the job array's index "
                              "(JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX, or "
                              "SLURM_ARRAY_TASK_ID less SLURM_ARRAY_TASK_MIN; plus one)")
    options.add_argument("--subset", metavar="N/T|P%",
                         help="with --verify: --slice N/T (its older name), or a random P "
                              "percent of the objects")
    options.add_argument("--repair", action="store_true",
                         help="with --verify: upload again, from src, every current object "
                              "that fails its checks (damaged, junk, cut short) when its "
                              "source file is still the one its name describes (size, mtime "
                              "and MD5); the damaged object is removed once the new one is "
                              "stored. Exit code 0 when every failure was repaired")
    for row in SETTINGS:     # the settings a flag sets too (--bwlimit)
        if row.flag:
            options.add_argument(row.flag, metavar=row.metavar or None,
                                 type=functools.partial(flag_value, row),
                                 help=f"{row.help} (overrides {row.key})")
    options.add_argument("--no-thaw", action="store_true",
                         help="with --restore or --verify: do not ask for objects in an "
                              "archive storage class (GLACIER, DEEP_ARCHIVE) to be thawed "
                              "(restore requests cost money); they are counted and left")
    options.add_argument("--dry-run", action="store_true",
                         help="show what a backup or restore would do; change nothing")
    options.add_argument("--allow-mass-delete", action="store_true",
                         help="allow a backup that marks deleted or removes more than half of "
                              "the backed-up files")
    options.add_argument("--expire-versions", action="store_true",
                         help="with a backup: apply versions_keep_days to every version object, "
                              "also those kept under a longer setting (0 or unset: remove every "
                              "version); without it a lowered setting removes none early")
    options.add_argument("--allow-mass-change", action="store_true",
                         help="allow a backup that replaces more than half of the backed-up "
                              "files: without history (versions_keep_days 0) it is refused, "
                              "with history it exits 5")
    options.add_argument("--json", action="store_true", help="with --list: JSON output")
    options.add_argument("-q", "--quiet", action="store_true",
                         help="only warnings, errors and the summary")
    options.add_argument("-v", "--verbose", action="store_true", help="a line per file")
    options.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def flag_value(row: Setting, text: str) -> Any:
    """A flag's value, read and checked as its setting's row says."""
    check = _Checker({row.key: text})
    value = check.read(row)      # (its validate, if any, runs in load_config)
    if check.messages:
        raise argparse.ArgumentTypeError(check.messages[0])
    return value


def parse_args(argv: Optional[list[str]]) -> Options:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.restore_deleted and not args.restore:
        parser.error("--restore-deleted needs --restore")
    if args.restore_only and not (args.restore or args.list):
        parser.error("--restore-only needs --restore or --list")
    if args.json and not args.list:
        parser.error("--json needs --list")
    if args.dry_run and (args.verify or args.list or args.check_protection):
        parser.error("--dry-run is for a backup or --restore")
    if args.versions and not args.list:
        parser.error("--versions needs --list")
    if args.expire_versions and (args.restore or args.verify or args.list
                                 or args.check_protection or args.report_skipped is not None):
        parser.error("--expire-versions is for a backup")
    if args.repair and not args.verify:
        parser.error("--repair needs --verify")
    if args.no_thaw and not (args.restore or args.verify):
        parser.error("--no-thaw needs --restore or --verify")
    if args.subset is not None:
        if not args.verify:
            parser.error("--subset needs --verify")
        try:
            args.subset = parse_subset(args.subset)
        except ValueError as exc:
            parser.error(f"--subset: {exc}")
    if args.slice is not None:
        if args.list or args.check_protection or args.report_skipped is not None:
            parser.error("--slice is for a backup, --restore or --verify")
        if args.subset is not None:
            parser.error("--subset is the older name of --slice: give one of them")
        try:
            args.slice = parse_slice(args.slice)
        except ValueError as exc:
            parser.error(f"--slice: {exc}")
    if args.dry_run and args.report_skipped is not None:
        parser.error("--dry-run is for a backup or --restore")
    args.as_of_text, args.as_of = args.as_of, None
    if args.as_of_text is not None:
        if not (args.restore or args.list or args.verify):
            parser.error("--as-of needs --restore, --verify or --list")
        if args.repair:
            parser.error("--repair makes the current objects whole again: leave out --as-of")
        if args.restore_deleted or args.versions:
            parser.error("--as-of gives the files of one moment, deleted since or not: leave "
                         "out --restore-deleted and --versions")
        try:
            args.as_of = parse_as_of(args.as_of_text)
        except ValueError as exc:
            parser.error(f"--as-of: {exc}")
    args.restore_only = tuple(args.restore_only or ())
    given = vars(args)
    flagged = {row.flag.lstrip("-").replace("-", "_"): row.key for row in SETTINGS if row.flag}
    fields = {f.name for f in dataclasses.fields(Options)}
    if set(given) - fields - set(flagged):    # (a new option needs its field)
        raise TypeError(f"Options has no field for {sorted(set(given) - fields)}")
    return Options(**{name: value for name, value in given.items() if name in fields},
                   settings={key: given[dest] for dest, key in flagged.items()
                             if given[dest] is not None})


def setup_logging(quiet: bool) -> None:
    """Timestamped progress on stdout, warnings and errors on stderr (so that
    ``--verify 2> errors.log`` holds exactly the failures)."""
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO)
    stamp = logging.Formatter("[%(asctime)s] %(message)s", "%Y-%m-%dT%H:%M:%S")
    out = logging.StreamHandler(sys.stdout)
    out.addFilter(lambda record: record.levelno < logging.WARNING and (
        not quiet or getattr(record, "summary", False)))
    err = logging.StreamHandler(sys.stderr)
    err.setLevel(logging.WARNING)
    for handler in (out, err):
        handler.setFormatter(stamp)
        handler.addFilter(lambda record: Progress.erase() or True)
        log.addHandler(handler)


def run_kind(args: Options) -> Optional[str]:
    """What the monitors call this run; None for what they do not watch (a list, a dry
    run)."""
    if args.list or args.dry_run or args.check_protection:
        return None
    return "restore" if args.restore else "verify" if args.verify else "backup"


def main(argv: Optional[list[str]] = None) -> int:
    """Run one action; the only place where exceptions become exit codes."""
    args = parse_args(argv)
    setup_logging(args.quiet)
    one_malloc_arena()    # before any thread: forked workers would inherit their arenas
    parent_stop_signals()
    take_requests()       # this run's requests only (main() may run more than once)
    S3Storage.pinned = {}     # and no versions pinned by an earlier one
    monitor = Monitor(run_kind(args), args.config)
    monitor.part = str(args.slice) if args.slice else ""
    if args.report_skipped is not None:
        monitor.skipped(args.report_skipped)
        return EXIT_OK
    try:
        needs = ("src", "dest") if args.repair or not (
            args.restore or args.verify or args.list or args.check_protection) else ("dest",)
        config, warnings = load_config(args.config, needs=needs, flags=args.settings)
        for warning in warnings:
            log.warning("warning: %s", warning)
        if config.bandwidth_limit:    # one bucket, made before any worker is forked
            config = replace(config, throttle=Throttle(config.bandwidth_limit))
        monitor.begin(config)
        action = run_restore if args.restore else run_verify if args.verify else \
            run_list if args.list else run_check_protection if args.check_protection else \
            run_backup
        code = action(config, args)
    except BackupError as exc:
        log.error("error: %s", exc.message)
        code = exc.exit_code
    except KeyboardInterrupt:
        log.error("interrupted: stopped before finishing; run again to complete")
        code = EXIT_INTERRUPTED
    except WorkerBug as exc:   # a bug in a worker: its own traceback
        log.error("internal error, please report it with this traceback:\n%s", exc.traceback)
        code = exc.exit_code
    except Exception:   # a bug: show everything
        log.error("internal error, please report it with this traceback:\n%s",
                  traceback.format_exc())
        code = EXIT_BUG
    monitor.end(code)
    return code


if __name__ == "__main__":
    code = main()
    if code == EXIT_INTERRUPTED:
        # Threads of a batch the stop abandoned may hold locks that the interpreter's exit
        # handlers (thread pools' finalizers) would wait on: everything is reported, go.
        sys.stdout.flush()
        sys.stderr.flush()
        exit_now(code)
    sys.exit(code)
