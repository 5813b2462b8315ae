"""The content pipeline: vectors, round trips at every threshold, compression rules,
spilling, tampering and decompression bombs."""

import gzip
import hashlib
import io
import lzma
import os
import random
import tempfile
import tracemalloc
import types

import pytest
from conftest import SALT_BYTES, codec_for, decoded, esb, make_codec

XZ_MAGIC = b"\xfd7zXZ\x00"


def text_like(size, seed=1):
    """Compressible but not trivial: words drawn from a small vocabulary."""
    rng = random.Random(seed)
    words = [bytes(rng.choice(b"abcdefghijklmnop") for _ in range(rng.randint(2, 9)))
             for _ in range(500)]
    out, total = [], 0
    while total < size:
        line = b" ".join(rng.choice(words) for _ in range(12)) + b"\n"
        out.append(line)
        total += len(line)
    return b"".join(out)[:size]


def encode_bytes(data, codec, size=None):
    sink = io.BytesIO()
    md5, n = esb.encode(io.BytesIO(data), len(data) if size is None else size, codec, sink)
    return sink.getvalue(), md5, n


def decode_bytes(obj, size, md5, codec):
    return decoded(io.BytesIO(obj), size, md5, codec)


def test_every_vector_decodes_to_its_manifest(vector):
    _, manifest, backup = vector
    codec = codec_for(manifest)
    for obj in manifest["objects"]:
        name = esb.decode_name(obj, codec)
        with open(backup / obj, "rb") as src:
            content = decode_bytes(src.read(), name.size, name.md5, codec)
        entry = manifest["files"][name.path]
        assert len(content) == entry["size"]
        assert hashlib.md5(content).hexdigest() == entry["md5"]
        assert hashlib.sha256(content).hexdigest() == entry["sha256"]


def test_vectors_restore_under_any_salt_setting(vector):
    """The object's own salt is what counts; a configured salt is only a cache."""
    _, manifest, backup = vector
    if not manifest.get("encrypt", True):
        return
    other = codec_for(manifest, salt=None if manifest.get("encryption_salt") else SALT_BYTES)
    obj = manifest["objects"][0]
    name = esb.decode_name(obj, other)
    content = decode_bytes((backup / obj).read_bytes(), name.size, name.md5, other)
    assert hashlib.md5(content).digest() == name.md5


SIZES = [0, 1, esb.XZ_MAX_SIZE, esb.XZ_MAX_SIZE + 1]
# Long repeats keep xz fast (about 50 MB/s instead of 1 MB/s on varied text).
BIG_TEXT = (text_like(1 << 16) * (esb.XZ_MAX_SIZE // (1 << 16) + 1))[:esb.XZ_MAX_SIZE + 1]


@pytest.mark.parametrize("etype", ["aes", "cha"])
@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("size", SIZES)
def test_round_trip(etype, compress, size):
    data = BIG_TEXT[:size]
    codec = make_codec(encryption_type=etype, compress=compress)
    obj, md5, n = encode_bytes(data, codec)
    assert (md5, n) == (hashlib.md5(data).digest(), size)
    header = esb.header_len(etype)
    if not compress:
        assert len(obj) == size + header
    assert decode_bytes(obj, size, md5, codec) == data


@pytest.mark.parametrize("size,magic", [(0, XZ_MAGIC), (esb.XZ_MAX_SIZE, XZ_MAGIC),
                                        (esb.XZ_MAX_SIZE + 1, esb.GZIP_MAGIC)])
def test_size_rule_picks_xz_up_to_10_mib_and_gzip_above(size, magic):
    obj, _, _ = encode_bytes(BIG_TEXT[:size], make_codec(encrypt=False))
    assert obj.startswith(magic)
    if magic == XZ_MAGIC:
        assert lzma.decompress(obj) == BIG_TEXT[:size]
    else:
        assert gzip.decompress(obj) == BIG_TEXT[:size]


def test_empty_file_is_the_32_byte_xz_stream():
    obj, _, _ = encode_bytes(b"", make_codec(encrypt=False))
    assert obj.hex() == "fd377a585a000004e6d6b446000000001cdf44211fb6f37d010000000004595a"


def test_incompressible_data_is_stored_gzip_that_both_readers_accept():
    data = os.urandom(3 * esb.CHUNK + 5)
    obj, md5, _ = encode_bytes(data, make_codec(encrypt=False))
    assert obj.startswith(esb.GZIP_MAGIC)
    assert len(obj) < len(data) * 1.001 + 64          # stored blocks: barely any overhead
    assert gzip.decompress(obj) == data                 # the existing tool's reader
    assert decode_bytes(obj, len(data), md5, make_codec(encrypt=False)) == data


def test_small_incompressible_file_still_follows_the_size_rule():
    data = os.urandom(esb.SAMPLE_MIN_FILE - 1)
    obj, _, _ = encode_bytes(data, make_codec(encrypt=False))
    assert obj.startswith(XZ_MAGIC)


def test_compressible_large_file_is_really_compressed():
    obj, _, _ = encode_bytes(BIG_TEXT[:2 * esb.CHUNK], make_codec(encrypt=False))
    assert len(obj) < esb.CHUNK


def test_xz_dictionary_fitted_to_input_gives_same_size():
    data = BIG_TEXT[:200_000]
    fitted = esb.make_compressor("xz", len(data), 6, 6)
    out = fitted.compress(data) + fitted.flush()
    plain = lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=6)
    assert abs(len(out) - len(plain)) <= 8
    assert lzma.decompress(out) == data


def test_reader_accepts_several_gzip_members_and_legacy_lzma():
    data = b"part one\n" * 100 + b"part two\n" * 100
    half = len(data) // 2
    payloads = [gzip.compress(data[:half]) + gzip.compress(data[half:]),
                lzma.compress(data, format=lzma.FORMAT_ALONE),
                lzma.compress(data[:half]) + lzma.compress(data[half:])]
    codec = make_codec(encrypt=False)
    for payload in payloads:
        assert decode_bytes(payload, len(data), hashlib.md5(data).digest(), codec) == data


def test_work_above_the_spill_threshold_goes_to_a_temporary_file(tmp_path, monkeypatch):
    size = 100 * 1000 * 1000 + 1     # MISSION: work above 100 MB never stays in memory
    assert esb.SPILL_BYTES < size
    codec = make_codec(encryption_type="aes", compress=False)
    src = io.BytesIO()
    block = os.urandom(1 << 16)
    for _ in range(size // len(block) + 1):
        src.write(block)
    src.truncate(size)
    src.seek(0)
    expected = hashlib.md5(src.getbuffer()).digest()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    tracemalloc.start()
    with esb.spool() as sink:
        md5, n = esb.encode(src, size, codec, sink)
        assert sink._rolled and os.listdir(tmp_path) == []   # on disk, already unlinked
        sink.seek(0)
        with esb.spool() as out:
            esb.decode(sink, size, md5, codec, out)
            assert out._rolled
            peak = tracemalloc.get_traced_memory()[1]
            out.seek(0, os.SEEK_END)
            assert out.tell() == size
    tracemalloc.stop()
    assert (md5, n) == (expected, size)
    assert peak < 2 * esb.SPILL_BYTES + 8 * esb.CHUNK    # the spool's buffer, not the file


def tamper_cases(obj, header):
    salt_at, nonce_at, tag_at = 0, esb.SALT_LEN, header - esb.TAG_LEN
    for region, at in (("salt", salt_at), ("nonce", nonce_at), ("tag", tag_at),
                       ("ciphertext", header), ("last byte", len(obj) - 1)):
        yield f"flip {region}", obj[:at] + bytes([obj[at] ^ 0x40]) + obj[at + 1:]
    for cut in (0, 1, esb.SALT_LEN, header - 1, header, header + 1, len(obj) - 1):
        yield f"truncate {cut}", obj[:cut]
    yield "extra byte", obj + b"\0"


@pytest.mark.parametrize("etype", ["aes", "cha"])
@pytest.mark.parametrize("compress", [True, False])
def test_tampered_objects_give_integrity_errors_and_no_plaintext(etype, compress):
    data = BIG_TEXT[:5000]
    codec = make_codec(encryption_type=etype, compress=compress)
    obj, md5, _ = encode_bytes(data, codec)
    for what, bad in tamper_cases(obj, esb.header_len(etype)):
        with pytest.raises(esb.IntegrityError):
            decode_bytes(bad, len(data), md5, codec)
            pytest.fail(f"{what}: decoded")


@pytest.mark.parametrize("etype", ["aes", "cha"])
def test_wrong_password_is_an_integrity_error(etype):
    data = BIG_TEXT[:5000]
    obj, md5, _ = encode_bytes(data, make_codec(encryption_type=etype))
    wrong = make_codec(encryption_type=etype, password="wrong")
    with pytest.raises(esb.IntegrityError) as info:
        decode_bytes(obj, len(data), md5, wrong)
    assert "authentication failed" in info.value.message


def test_name_mismatch_is_an_integrity_error():
    data = b"hello\n"
    codec = make_codec()
    obj, md5, _ = encode_bytes(data, codec)
    with pytest.raises(esb.IntegrityError, match="MD5"):
        decode_bytes(obj, len(data), bytes(16), codec)
    with pytest.raises(esb.IntegrityError, match="declares"):
        decode_bytes(obj, len(data) + 1, md5, codec)


SMALL = text_like(3000, seed=7)
PAYLOADS = {      # compressed payloads of SMALL that the format allows, as decode reads them
    "xz": lzma.compress(SMALL),
    "gzip": gzip.compress(SMALL),
    "gzip members": gzip.compress(SMALL[:1000]) + gzip.compress(SMALL[1000:]),
    "xz streams": lzma.compress(SMALL[:10]) + lzma.compress(SMALL[10:]),
    "xz, zero padding": lzma.compress(SMALL) + bytes(8),
    "gzip, trailing bytes": gzip.compress(SMALL) + b"not a stream",
    "legacy lzma": lzma.compress(SMALL, format=lzma.FORMAT_ALONE),
}


@pytest.mark.parametrize("kind", PAYLOADS)
@pytest.mark.parametrize("etype", ["aes", "cha", None])
def test_a_whole_small_object_decodes_as_its_stream_does(kind, etype):
    """decode() of an object's bytes in memory (decode_whole: one call to decrypt, one to
    decompress where the payload is one stream) gives what its stream gives, for every
    payload the stream decoder takes; and each case goes the way its name says."""
    codec = make_codec(encrypt=etype is not None, encryption_type=etype or "aes")
    obj = esb.seal_with(codec, PAYLOADS[kind]) if etype else PAYLOADS[kind]
    md5 = hashlib.md5(SMALL).digest()
    assert decoded(obj, len(SMALL), md5, codec) == SMALL == decode_bytes(obj, len(SMALL), md5,
                                                                          codec)
    one_stream = kind in ("xz", "gzip", "legacy lzma")
    assert (esb.decompress_whole(PAYLOADS[kind], len(SMALL)) is not None) == one_stream
    for bad_size, message in ((len(SMALL) - 1, "larger than"), (len(SMALL) + 1, "declares")):
        with pytest.raises(esb.IntegrityError, match=message):
            decoded(obj, bad_size, md5, codec)


def test_a_whole_object_with_a_wrong_password_fails_authentication():
    codec = make_codec(encryption_type="cha")
    obj = esb.seal_with(codec, PAYLOADS["xz"])
    wrong = make_codec(encryption_type="cha", password="not the password")
    with pytest.raises(esb.IntegrityError, match="authentication failed"):
        decoded(obj, len(SMALL), hashlib.md5(SMALL).digest(), wrong)


def test_decompress_whole_leaves_large_output_to_the_stream():
    """A payload whose original is a chunk or more is never decompressed in one piece."""
    big = bytes(esb.CHUNK)
    assert esb.decompress_whole(lzma.compress(big), len(big)) is None
    assert esb.decompress_whole(lzma.compress(big[:-1]), len(big) - 1) == big[:-1]


class CountingSink(io.RawIOBase):
    def __init__(self):
        self.written = 0

    def writable(self):
        return True

    def write(self, data):
        self.written += len(data)
        return len(data)


@pytest.mark.parametrize("kind", ["xz", "gzip"])
@pytest.mark.parametrize("encrypt", [True, False])
@pytest.mark.parametrize("whole", [False, True], ids=["streamed", "whole"])
def test_decompression_bomb_stops_at_the_declared_size(kind, encrypt, whole):
    bomb_size = 256 << 20                     # 256 MiB of zeros in about 250 KB (gzip) / 40 KB (xz)
    comp = esb.make_compressor(kind, bomb_size, 6, 9)
    zeros = bytes(esb.CHUNK)
    payload = b"".join(comp.compress(zeros) for _ in range(bomb_size // len(zeros)))
    payload += comp.flush()
    codec = make_codec(encrypt=encrypt)
    obj = esb.seal_with(codec, payload) if encrypt else payload
    sink = CountingSink()
    tracemalloc.start()
    with pytest.raises(esb.IntegrityError, match="larger than the 10 bytes"):
        esb.decode(obj if whole else io.BytesIO(obj), 10, bytes(16), codec, sink)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sink.written <= 10
    # tracemalloc also sees liblzma's allocations: its 8 MiB dictionary counts here
    assert peak < 16 * esb.CHUNK + len(obj)


def test_a_small_object_is_read_whole_and_one_that_grew_since_listed_is_streamed(tmp_path):
    """_object_source: an object listed under SMALL_FILE comes to decode() as its bytes (one
    read), unless the file is now larger than listed: then as a stream, read to its end."""
    codec = make_codec()
    obj_bytes, md5, _ = encode_bytes(SMALL, codec)
    name = esb.BackupName("a.txt", 1_700_000_000, len(SMALL), md5)
    key = esb.encode_name(name, codec)
    (tmp_path / key).write_bytes(obj_bytes)
    worker = types.SimpleNamespace(dest=esb.LocalStorage(str(tmp_path)))
    listed = esb.stored_object(key, len(obj_bytes), name)
    with esb._object_source(worker, listed, None) as src:
        assert src == obj_bytes
    assert decoded(src, len(SMALL), md5, codec) == SMALL
    (tmp_path / key).write_bytes(obj_bytes + b"rewritten since")
    with esb._object_source(worker, listed, None) as src:
        assert not isinstance(src, bytes)
        assert src.read() == obj_bytes + b"rewritten since"
    with esb._object_source(worker, listed, b"fetched") as src:
        assert src == b"fetched"           # what the request scheduler fetched is not read again
