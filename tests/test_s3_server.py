"""The tests' own S3 server (tests/s3_server.py): a start that fails is made again.

Its ports are picked free and released for weed to bind; run in parallel, the server of
another test worker may take one meanwhile.
"""

import socket

import s3_server


def test_a_start_that_loses_a_port_is_made_again_on_new_ports(tmp_path, monkeypatch):
    picked, real_pick = [], s3_server.pick_http_ports
    thief = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    def pick(count):
        ports = real_pick(count)
        if not picked:              # the first start: another process binds a port first
            thief.bind(("127.0.0.1", ports[1]))
        picked.append(ports)
        return ports
    monkeypatch.setattr(s3_server, "pick_http_ports", pick)
    folders = iter(str(tmp_path / f"start{i}") for i in range(s3_server.START_TRIES))
    try:
        server = s3_server.start_server(lambda: next(folders))
        try:
            assert len(picked) == 2 and server.ports == picked[1]
            assert server.client().list_buckets()["Buckets"] == []
        finally:
            server.stop()
    finally:
        thief.close()
    first = (tmp_path / "start0" / "weed-console.log").read_text()
    assert f"port {picked[0][1]} " in first and "not available" in first, first[-2000:]
