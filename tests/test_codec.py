"""Base36 and object names: docs/FORMAT.md sections 2, 3 and 6, and every vector's names."""

import hashlib

import pytest
from conftest import SALT_BYTES, codec_for, esb, make_codec

# docs/FORMAT.md section 2 examples.
INT_CASES = [(0, "0"), (35, "z"), (36, "10"), (255, "73"), (1700000000, "s44we8"),
             (20261126, "c29l2")]
BYTES_CASES = [("00", "0"), ("0000", "00"), ("0001", "01"), ("0000ff", "0073"), ("ff", "73")]


@pytest.mark.parametrize("number,text", INT_CASES)
def test_b36_int_known_answers(number, text):
    assert esb.b36_encode_int(number) == text
    assert esb.b36_decode_int(text) == number


def test_b36_int_decoder_tolerates_leading_zeros_and_case():
    assert esb.b36_decode_int("00e") == 14
    assert esb.b36_decode_int("S44WE8") == 1700000000


@pytest.mark.parametrize("bad", ["", " 1", "1_0", "+1", "-1", "1.0", "é"])
def test_b36_int_decoder_refuses_non_digits(bad):
    with pytest.raises(ValueError):
        esb.b36_decode_int(bad)


@pytest.mark.parametrize("hexbytes,text", BYTES_CASES)
def test_b36_bytes_known_answers(hexbytes, text):
    assert esb.b36_encode_bytes(bytes.fromhex(hexbytes)) == text
    assert esb.b36_decode_bytes(text) == bytes.fromhex(hexbytes)


@pytest.mark.parametrize("data", [b"\0", b"\0\0\0\x01", b"\x01\0", bytes(range(256)),
                                  b"\0" + hashlib.sha512(b"x").digest()])
def test_b36_bytes_round_trip_keeps_leading_zero_bytes(data):
    assert esb.b36_decode_bytes(esb.b36_encode_bytes(data)) == data


def test_b36_bytes_refuses_empty():
    with pytest.raises(ValueError):
        esb.b36_encode_bytes(b"")
    with pytest.raises(ValueError):
        esb.b36_decode_bytes("")


HELLO_MD5 = bytes.fromhex("746308829575e17c3331bbcb00c0898b")
HELLO = esb.BackupName("docs/hello.txt", 1700000000, 14, HELLO_MD5, 0)

# docs/FORMAT.md section 6, plaintext names.
NAME_CASES = [
    (HELLO, "docs/hello.txt.s44we8.e.6w1xpqf64x85bwmud2ryoahzf.0.enc"),
    (HELLO.with_deleted(20261126), "docs/hello.txt.s44we8.e.6w1xpqf64x85bwmud2ryoahzf.c29l2.enc"),
    (esb.BackupName("md5-leading-zero.txt", 1700000010, 23,
                    bytes.fromhex("00005c131dc5560e8975e6cb112cc65b")),
     "md5-leading-zero.txt.s44wei.n.3vpcr00jhmx2ukv5ntm3x7.0.enc"),
    (esb.BackupName("empty.txt", 0, 0, hashlib.md5(b"").digest()),
     "empty.txt.0.0.ck2u8j60r58fu0sgyxrigm3cu.0.enc"),
    (esb.BackupName("mypicture.jpg", 1560948896, 18971,
                    bytes.fromhex("904782c4a8a86e00d7a65764059e3a26")),
     "mypicture.jpg.ptcjvk.emz.8ji0wkvrgyrnqkqsrdirborvq.0.enc"),
]
PLAIN = esb.Codec(encrypt_filenames=False)


@pytest.mark.parametrize("name,text", NAME_CASES, ids=lambda x: getattr(x, "path", None))
def test_plaintext_names_known_answers(name, text):
    assert esb.encode_name(name, PLAIN) == text
    assert esb.decode_name(text, PLAIN) == name


@pytest.mark.parametrize("path", ["a.b.c.d.e", "x.enc", "ü dir/名前 with spaces.txt", "a/b/c"])
def test_plaintext_names_round_trip_awkward_paths(path):
    name = esb.BackupName(path, 5, 7, bytes(16), 20261126)
    assert esb.decode_name(esb.encode_name(name, PLAIN), PLAIN) == name


@pytest.mark.parametrize("bad", [
    "hello.txt", "hello.txt.enc", ".s44we8.e.0.0.enc", "a.b.c.d.enc", "a.1.2.3.4x!.enc",
    "a.1.2.3..enc", "a.1.2." + "z" * 26 + ".0.enc", "a.1." + "9" * 100 + ".0.0.enc"])
def test_bad_names_give_typed_error(bad):
    with pytest.raises(esb.BadNameError) as info:
        esb.decode_name(bad, PLAIN)
    assert bad[:8] in info.value.message


# docs/FORMAT.md section 6: encrypted name of docs/hello.txt with a fixed salt and nonce (the
# password and salt are conftest's PASSWORD and SALT).
ENCRYPTED_NAME_KAT = {
    "aes": ("101112131415161718191a1b1c1d1e1f", "01fpon5qjw6ieyoqbogchst2p4bye41kwe55a7yo5bpa9lp80b4zyfacgfgir430v5qe5rypgyq9xqgeihafkirzujm7vl9q70h12ftrv41a1swvqwumtdokpvkkjwhdnzdk6pon8f8gzo86u4y5qh9a.enc"),  # noqa: E501
    "cha": ("202122232425262728292a2b2c2d2e2f3031323334353637", "05lbmjyckukkc6awbsb1by4j420x13lry3bolu4eej636lc55xr8tx9zwmbo5fpy6tpcuqusrgbivd37a2dtneogyv19uvy14rfhjg8znad47fi31rw7ktge9825o4g5jk4a6qkwidv38sx56laj2nnnsbncaii0n5us.enc"),  # noqa: E501
}


@pytest.mark.parametrize("etype", ["aes", "cha"])
def test_encrypted_name_known_answer(etype):
    nonce, expected = ENCRYPTED_NAME_KAT[etype]
    codec = make_codec(encryption_type=etype, encrypt_filenames=True)
    stem = esb.format_plain_name(HELLO).encode()
    assert len(stem) == 51
    blob = esb.seal_bytes(etype, codec.key(SALT_BYTES), SALT_BYTES, stem, bytes.fromhex(nonce))
    assert esb.b36_encode_bytes(blob) + ".enc" == expected
    assert expected.startswith("0")    # the salt's leading zero byte survives
    assert esb.decode_name(expected, codec) == HELLO


@pytest.mark.parametrize("etype", ["aes", "cha"])
def test_encrypted_names_are_fresh_each_time_and_round_trip(etype):
    codec = make_codec(encryption_type=etype, encrypt_filenames=True)
    first, second = esb.encode_name(HELLO, codec), esb.encode_name(HELLO, codec)
    assert first != second and "/" not in first
    assert esb.decode_name(first, codec) == esb.decode_name(second, codec) == HELLO


def test_encrypted_name_reader_falls_back_to_plaintext_names():
    codec = make_codec(encrypt_filenames=True)
    assert esb.decode_name(NAME_CASES[0][1], codec) == HELLO


def test_encrypted_name_with_wrong_password_is_a_typed_error():
    codec = make_codec(encrypt_filenames=True)
    name = esb.encode_name(HELLO, codec)
    wrong = make_codec(password="not it", encrypt_filenames=True)
    with pytest.raises(esb.BadNameError) as info:
        esb.decode_name(name, wrong)
    assert "not it" not in info.value.message and "does not decrypt" in info.value.message


def test_every_vector_name_parses_to_its_manifest_entry(vector):
    _, manifest, backup = vector
    codec = codec_for(manifest)
    seen = set()
    for obj in manifest["objects"]:
        assert (backup / obj).is_file()
        name = esb.decode_name(obj, codec)
        entry = manifest["files"][name.path]
        assert (name.size, name.md5.hex(), name.mtime) == (entry["size"], entry["md5"],
                                                           entry["mtime"])
        assert bool(name.deleted) == entry["deleted"]
        if entry["deleted"]:
            assert name.deleted == 20261126
        seen.add(name.path)
    assert seen == set(manifest["files"])
