"""A TCP proxy on loopback that makes a server look far away: every byte is delivered half a
round trip after it was sent, in each direction, and every new connection waits one round
trip before it is made (the TCP handshake).  Bandwidth is not limited: data in flight is
pipelined, as on a real long link.  Standard library only; used by bench.py --rtt.

    with LatencyProxy("127.0.0.1", 8333, rtt_ms=40) as proxy:
        ... talk to proxy.endpoint_url instead of http://127.0.0.1:8333 ...
        proxy.connections          # TCP connections opened through it
        proxy.cpu_seconds()        # the CPU time the proxy itself used (it shares the cores)

It runs an asyncio loop in one thread of the calling process: one thread for every
connection would cost more CPU than the requests it delays.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

CHUNK = 256 * 1024


class LatencyProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to ``host:port`` with ``rtt_ms``."""

    def __init__(self, host: str, port: int, rtt_ms: float):
        self.target = (host, port)
        self.rtt = rtt_ms / 1000.0
        self.connections = 0
        self.port = 0
        self.endpoint_url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._server = None

    def __enter__(self) -> "LatencyProxy":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the latency proxy did not start")
        return self

    def __exit__(self, *exc_info) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _shutdown(self) -> None:
        self._server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def cpu_seconds(self) -> float:
        """CPU seconds the proxy's thread has used so far."""
        return time.clock_gettime(time.pthread_getcpuclockid(self._thread.ident))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=512))
        self.port = self._server.sockets[0].getsockname()[1]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _serve(self, client_in: asyncio.StreamReader,
                     client_out: asyncio.StreamWriter) -> None:
        try:
            await self._forward(client_in, client_out)
        except asyncio.CancelledError:      # the proxy is stopping
            client_out.close()

    async def _forward(self, client_in: asyncio.StreamReader,
                       client_out: asyncio.StreamWriter) -> None:
        self.connections += 1
        await asyncio.sleep(self.rtt)                     # the handshake's round trip
        try:
            server_in, server_out = await asyncio.open_connection(*self.target)
        except OSError:
            client_out.close()
            return
        for writer in (client_out, server_out):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.gather(self._pipe(client_in, server_out),
                                 self._pipe(server_in, client_out), return_exceptions=True)
        finally:
            for writer in (client_out, server_out):
                writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy ``reader`` to ``writer``, each chunk delivered half a round trip late."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = b""
                queue.put_nowait((loop.time() + self.rtt / 2, data))
                if not data:
                    break
            await delivering
        except (OSError, ConnectionError):
            delivering.cancel()
