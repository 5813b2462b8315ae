#!/usr/bin/env python3
"""encrypted_s3_backup: compressed, encrypted, stateless backups to S3 or a local folder.

Pipeline
    walk the source -> for each new or changed file: read once (hash, compress, encrypt)
    -> store one object whose *name* carries the file's metadata -> rename objects of
    files that disappeared (deleted date), expire old ones.  Restore and verify run the
    same steps backwards: authenticate and decrypt, decompress, check size and MD5.

On-disk format (frozen: it is the existing masterapps-au tool's format, see FORMAT.md)
    object name, plaintext names:
        <path>.<b36 mtime>.<b36 size>.<b36 md5>.<b36 deleted YYYYMMDD or 0>.enc
    object name, encrypted names:
        b36bytes(encrypt(utf8(<plaintext name without .enc>))) + ".enc"
    object bytes:
        +-----------+-------------------------+-----------+-----------------------+
        | salt (16) | nonce (16 aes / 24 cha) | tag (16)  | ciphertext of payload |
        +-----------+-------------------------+-----------+-----------------------+
        payload = xz (original size <= 10 MiB) or gzip (above) of the file, or the
        file itself when compress is off; without encryption the object is the payload.

There is no state anywhere else: the destination's listing is the whole truth.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import struct
import tempfile
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import BinaryIO, Callable, Iterator, Optional

__version__ = "1.0.0"

# =====================================================================================
# Constants
# =====================================================================================

OBJECT_SUFFIX = ".enc"            # every backup object's name ends with this
B36_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
B36_FIELD_MAX = 64                # chars; longest numeric name field we accept (md5 is <= 25)
MD5_LEN = 16                      # bytes of an MD5 digest

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
SPILL_BYTES = 16 * 1024 * 1024    # bytes of work kept in memory before spilling to a temp file
                                  # (MISSION: never more than 100 MB; less keeps workers small)


# =====================================================================================
# Errors
# =====================================================================================

class BackupError(Exception):
    """Base of every error the user can act on; ``main()`` prints it as one line."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ConfigError(BackupError):
    """The configuration or the command line is wrong; nothing was done."""

    exit_code = 2


class BadNameError(BackupError):
    """An object name is neither a valid plaintext nor a decryptable encrypted name."""


class IntegrityError(BackupError):
    """An object failed authentication, decompression, or its size or MD5 check."""


class SourceChangedError(BackupError):
    """A source file changed while it was being read."""


# =====================================================================================
# Base36 codec (FORMAT.md section 2)
# =====================================================================================

_B36_RE = re.compile(r"[0-9a-zA-Z]+\Z")


def b36_encode_int(n: int) -> str:
    """Plain base-36 spelling of a non-negative integer, lowercase, no leading zeros."""
    assert n >= 0, n
    if n == 0:
        return "0"
    digits = []
    while n:
        n, rem = divmod(n, 36)
        digits.append(B36_DIGITS[rem])
    return "".join(reversed(digits))


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
# Key derivation and streaming AEAD (FORMAT.md section 5)
# =====================================================================================

def _password_bytes(encryption_type: str, password: str) -> bytes:
    """aes (PBKDF2) reads the password as Latin-1, cha (Argon2id) as UTF-8: FORMAT.md 5.3."""
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


class _AesGcmSealer:
    """Streaming AES-256-GCM with the format's 16-byte nonce."""

    def __init__(self, key: bytes, nonce: bytes, decrypt_tag: Optional[bytes] = None):
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        cipher = Cipher(algorithms.AES(key), modes.GCM(nonce, decrypt_tag))
        self._ctx = cipher.encryptor() if decrypt_tag is None else cipher.decryptor()
        self._tag = decrypt_tag

    def update(self, data: bytes) -> bytes:
        return self._ctx.update(data)

    def finalize(self) -> bytes:
        from cryptography.exceptions import InvalidTag
        try:
            self._ctx.finalize()
        except InvalidTag:
            raise IntegrityError("authentication failed (wrong password or damaged object)") from None
        return self._tag or self._ctx.tag


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


def seal_with(codec: Codec, data: bytes) -> bytes:
    salt = codec.new_salt()
    return seal_bytes(codec.encryption_type, codec.key(salt), salt, data)


def open_with(codec: Codec, blob: bytes) -> bytes:
    """Decrypt a whole small object (an encrypted name); IntegrityError when it fails."""
    salt, nonce, tag = split_header(codec.encryption_type, blob)
    aead = aead_stream(codec.encryption_type, codec.key(salt), nonce, tag)
    plain = aead.update(blob[header_len(codec.encryption_type):])
    aead.finalize()
    return plain


# =====================================================================================
# Backup names (FORMAT.md section 3)
# =====================================================================================

@dataclass(frozen=True)
class BackupName:
    """Everything we know about a backed-up file: it lives in its object's name."""

    path: str                 # relative, "/"-separated
    mtime: int                # whole seconds since the epoch
    size: int                 # bytes of the original file
    md5: bytes                # 16-byte digest of the original content
    deleted: int = 0          # YYYYMMDD of the run that first saw it missing, 0 while it exists

    def with_deleted(self, deleted: int) -> "BackupName":
        return BackupName(self.path, self.mtime, self.size, self.md5, deleted)


def format_plain_name(name: BackupName) -> str:
    """``<path>.<mtime>.<size>.<md5>.<deleted>`` without the ``.enc`` suffix."""
    fields = (name.mtime, name.size, int.from_bytes(name.md5, "big"), name.deleted)
    return name.path + "".join("." + b36_encode_int(n) for n in fields)


def parse_plain_name(stem: str) -> BackupName:
    """Inverse of format_plain_name: four base-36 fields split off the right at dots.

    Raises BadNameError whose message is the reason only; decode_name() adds the name.
    """
    parts = stem.rsplit(".", 4)
    if len(parts) != 5 or not parts[0]:
        raise BadNameError("expected <path>.<mtime>.<size>.<md5>.<deleted>.enc")
    path, *fields = parts
    try:
        if any(len(f) > B36_FIELD_MAX for f in fields):
            raise ValueError("field too long")
        mtime, size, md5, deleted = (b36_decode_int(f) for f in fields)
    except ValueError:
        raise BadNameError("a numeric field is not a short base-36 number") from None
    if md5 >> (8 * MD5_LEN):
        raise BadNameError("the MD5 field is larger than 128 bits")
    return BackupName(path, mtime, size, md5.to_bytes(MD5_LEN, "big"), deleted)


def encode_name(name: BackupName, codec: Codec) -> str:
    """The object name for ``name``: plaintext, or encrypted with a fresh nonce."""
    stem = format_plain_name(name)
    if codec.encrypt_filenames:
        stem = b36_encode_bytes(seal_with(codec, stem.encode("utf-8", "surrogateescape")))
    return stem + OBJECT_SUFFIX


def decode_name(object_name: str, codec: Codec) -> BackupName:
    """Read an object name; an encrypted name that does not decrypt is read as plaintext.

    Raises BadNameError when it is neither (the message names the object, never secrets).
    """
    if not object_name.endswith(OBJECT_SUFFIX):
        raise BadNameError(f"{object_name!r} does not end with {OBJECT_SUFFIX}")
    stem = object_name[:-len(OBJECT_SUFFIX)]
    if codec.encrypt_filenames and "/" not in stem:
        try:
            stem = open_with(codec, b36_decode_bytes(stem)).decode("utf-8", "surrogateescape")
        except (ValueError, IntegrityError):
            pass
    try:
        return parse_plain_name(stem)
    except BadNameError as exc:
        hint = (" and does not decrypt with this password and encryption_type"
                if codec.encrypt_filenames else "")
        raise BadNameError(f"object {object_name!r} is not a backup name{hint}: "
                           f"{exc.message}") from None


# =====================================================================================
# Compression (FORMAT.md section 4)
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

    def new():
        if gz:
            return zlib.decompressobj(31)
        return lzma.LZMADecompressor(lzma.FORMAT_AUTO, memlimit=LZMA_MEMLIMIT)

    decomp, members_done = new(), 0

    def feed(data: bytes) -> Iterator[bytes]:
        nonlocal decomp, members_done
        while True:
            if decomp.eof:
                members_done += 1
                data = decomp.unused_data + data
                if not data.strip(b"\0"):
                    return
                decomp = new()
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


def decode(src: BinaryIO, size: int, md5: bytes, codec: Codec, sink: BinaryIO) -> None:
    """Turn object bytes back into the original file, written to ``sink``.

    Raises IntegrityError (after which the caller must discard ``sink``: with encryption,
    bytes reach it before the tag at the end of the stream is checked) when the object is
    short, fails authentication, does not decompress, or does not match ``size``/``md5``.
    Output beyond ``size`` stops the decode at once, so a bomb never fills memory or disk.
    """
    aead = None
    if codec.encrypt:
        salt, nonce, tag = split_header(codec.encryption_type, src.read(header_len(codec.encryption_type)))
        aead = aead_stream(codec.encryption_type, codec.key(salt), nonce, tag)
        payload = (aead.update(chunk) for chunk in _chunks(src))
    else:
        payload = _chunks(src)
    digest, total = hashlib.md5(), 0
    try:
        for chunk in (decompress_stream(payload) if codec.compress else payload):
            total += len(chunk)
            if total > size:
                raise IntegrityError(f"content is larger than the {size} bytes its name declares")
            digest.update(chunk)
            sink.write(chunk)
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
    if total != size:
        raise IntegrityError(f"content is {total} bytes, its name declares {size}")
    if digest.digest() != md5:
        raise IntegrityError(f"content MD5 {digest.hexdigest()} does not match its name's "
                             f"{md5.hex()}")


def spool(tmp_dir: Optional[str] = None) -> BinaryIO:
    """A seekable scratch file: memory up to SPILL_BYTES, then a 0600 file in ``tmp_dir``."""
    return tempfile.SpooledTemporaryFile(max_size=SPILL_BYTES, dir=tmp_dir)


def decode_to_spool(src: BinaryIO, size: int, md5: bytes, codec: Codec,
                    tmp_dir: Optional[str] = None) -> BinaryIO:
    """decode() into a scratch spool, handed out rewound only once every check has passed."""
    out = spool(tmp_dir)
    try:
        decode(src, size, md5, codec, out)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out
