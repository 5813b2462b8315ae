"""Key derivation and the streaming AEADs: known answers, cross-checks, failures.

Known answers come from docs/FORMAT.md section 6 (produced by the existing tool) and from
draft-irtf-cfrg-xchacha-03 (sections 2.2.1 and A.3.1).  The streaming XChaCha20-Poly1305
is cross-checked against libsodium (pynacl) and the streaming AES-GCM against the one-shot
AESGCM of `cryptography`, at sizes on both sides of block and chunk boundaries.
"""

import os
import threading

import pytest
from conftest import PASSWORD, SALT_BYTES, esb, make_codec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt

KEY_KATS = [  # docs/FORMAT.md section 6
    ("aes", PASSWORD, "8736985eadc89cfee314d74a15389705a28c73a1e48ba151f1fc29f25442352c"),
    ("cha", PASSWORD, "853b272a44db1421c02962669a55eb0994f3cab385ed1c4c79253eee19bab49e"),
    ("aes", "pässwörd-ß", "1ec76a52e2db9798981033782d9b50a8af4ab11cad82c8445d0cc673e4fdeb6e"),
    ("cha", "pässwörd-ß", "da697306fb58049e537f9178aa6d80cbc50a531e03cb12ca21da2b34bc3120f8"),
]


@pytest.mark.parametrize("etype,password,key", KEY_KATS)
def test_key_derivation_known_answers(etype, password, key):
    assert esb.derive_key(etype, password, SALT_BYTES).hex() == key


def test_aes_password_is_latin1_not_utf8():
    wrong = "1b3e058681890b3a2969db901ec8d90b3dab5b9f409c2e25708e9c7c8e597717"
    assert esb.derive_key("aes", "pässwörd-ß", SALT_BYTES).hex() != wrong


def test_aes_refuses_password_outside_latin1_without_showing_it():
    with pytest.raises(esb.ConfigError) as info:
        esb.derive_key("aes", "pass€word", SALT_BYTES)
    assert "€" not in info.value.message and "cha" in info.value.message


def test_key_is_derived_once_per_salt():
    esb.derive_key.cache_clear()
    for _ in range(3):
        esb.derive_key("aes", PASSWORD, SALT_BYTES)
    assert esb.derive_key.cache_info().misses == 1


def test_key_ahead_derives_the_configured_salts_key_on_a_thread():
    esb.derive_key.cache_clear()
    codec = make_codec()
    codec.key_ahead()
    assert esb._DERIVING            # started, not yet waited for
    esb.key_derived()
    assert not esb._DERIVING
    assert codec.key(SALT_BYTES).hex() == KEY_KATS[0][2]
    assert esb.derive_key.cache_info()[:2] == (1, 1)     # the thread's miss, then a hit


@pytest.mark.parametrize("fields", [{"salt": None}, {"encrypt": False},
                                    {"encrypt_filenames": True}])
def test_key_ahead_only_where_a_configured_salt_serves_every_object(fields):
    # No salt: each object has its own.  Encrypted names: the listing needs the key at once.
    esb.derive_key.cache_clear()
    make_codec(**fields).key_ahead()
    assert not esb._DERIVING
    assert esb.derive_key.cache_info().misses == 0


def test_key_ahead_leaves_a_bad_password_to_the_first_use_of_the_key(monkeypatch, capsys):
    raised = []
    monkeypatch.setattr(threading, "excepthook", raised.append)
    codec = make_codec(password="pass\u20acword")
    codec.key_ahead()
    esb.key_derived()
    assert raised == [] and capsys.readouterr() == ("", "")    # no thread's traceback
    with pytest.raises(esb.ConfigError):
        codec.key(SALT_BYTES)


def test_hchacha20_draft_vector():
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    assert esb.hchacha20(key, nonce).hex() == (
        "82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")


def test_xchacha20poly1305_draft_vector_streamed():
    plaintext = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one "
                 b"tip for the future, sunscreen would be it.")
    aad = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
    key, nonce = bytes(range(0x80, 0xA0)), bytes(range(0x40, 0x58))
    sealer = esb._XChaChaSealer(key, nonce, aad=aad)
    ct = b"".join(sealer.update(plaintext[i:i + 7]) for i in range(0, len(plaintext), 7))
    assert ct.hex() == (
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa644"
        "0bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e"
        "3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e")
    assert sealer.finalize().hex() == "c0875924c1c7987947deafd8780acf49"


# docs/FORMAT.md section 6: whole objects of "hi\n" without compression (salt | nonce | tag | ct).
OBJECT_KATS = {
    "aes": ("101112131415161718191a1b1c1d1e1f",
            "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
            "1405526fb824425ffb45b2af68b505bb6dbc0a"),
    "cha": ("202122232425262728292a2b2c2d2e2f3031323334353637",
            "000102030405060708090a0b0c0d0e0f202122232425262728292a2b2c2d2e2f3031323334353637"
            "14df272cd2f3996e9ee0b8fd4a4bc49ad9e996"),
}


@pytest.mark.parametrize("etype", ["aes", "cha"])
def test_whole_object_known_answer_one_shot_and_streamed(etype):
    nonce, expected = OBJECT_KATS[etype]
    key = esb.derive_key(etype, PASSWORD, SALT_BYTES)
    nonce = bytes.fromhex(nonce)
    assert esb.seal_bytes(etype, key, SALT_BYTES, b"hi\n", nonce).hex() == expected
    stream = esb.aead_stream(etype, key, nonce)
    ct = stream.update(b"h") + stream.update(b"i\n")
    assert (SALT_BYTES + nonce + stream.finalize() + ct).hex() == expected
    codec = make_codec(compress=False, encryption_type=etype)
    assert esb.open_with(codec, bytes.fromhex(expected)) == b"hi\n"


SIZES = [0, 1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1000, 65536,
         esb.CHUNK - 1, esb.CHUNK, esb.CHUNK + 1, 3 * esb.CHUNK + 17]


def _streamed(etype, key, nonce, data, piece):
    stream = esb.aead_stream(etype, key, nonce)
    ct = b"".join(stream.update(data[i:i + piece]) for i in range(0, len(data), piece))
    return ct, stream.finalize()


@pytest.mark.parametrize("size", SIZES)
def test_streamed_xchacha_matches_libsodium(size):
    key, nonce, data = os.urandom(32), os.urandom(24), os.urandom(size)
    reference = crypto_aead_xchacha20poly1305_ietf_encrypt(data, None, nonce, key)
    for piece in (1000, 64, esb.CHUNK):
        if piece < 1000 and size > 70000:
            continue
        ct, tag = _streamed("cha", key, nonce, data, piece)
        assert ct + tag == reference


@pytest.mark.parametrize("size", SIZES)
def test_streamed_aes_gcm_matches_one_shot(size):
    key, nonce, data = os.urandom(32), os.urandom(16), os.urandom(size)
    reference = AESGCM(key).encrypt(nonce, data, None)
    ct, tag = _streamed("aes", key, nonce, data, 4096)
    assert ct + tag == reference


@pytest.mark.parametrize("etype", ["aes", "cha"])
def test_streamed_decrypt_round_trip_and_bad_tag(etype):
    key, nonce = os.urandom(32), os.urandom(esb.NONCE_LEN[etype])
    data = os.urandom(5000)
    ct, tag = _streamed(etype, key, nonce, data, 777)
    opener = esb.aead_stream(etype, key, nonce, tag)
    assert opener.update(ct[:100]) + opener.update(ct[100:]) == data
    assert opener.finalize() == tag
    for bad_tag, bad_ct in ((bytes(16), ct), (tag, ct[:-1] + bytes([ct[-1] ^ 1])),
                            (tag, ct[:-1])):
        opener = esb.aead_stream(etype, key, nonce, bad_tag)
        opener.update(bad_ct)
        with pytest.raises(esb.IntegrityError):
            opener.finalize()


def test_short_header_is_an_integrity_error():
    for n in (0, 1, 47):
        with pytest.raises(esb.IntegrityError):
            esb.split_header("aes", bytes(n))
    with pytest.raises(esb.IntegrityError):
        esb.split_header("cha", bytes(55))
