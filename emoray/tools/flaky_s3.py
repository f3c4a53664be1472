"""A flaky object store for the fault tests and `emoray bench faults`: a proxy on 127.0.0.1 in
front of an S3 endpoint that fails a fixed, seeded share of requests the ways S3 fails under
load.

Each request draws one outcome from `Faults` (a seeded generator, so a run's mix is fixed):

- `slowdown`: answered `503 SlowDown` (S3's throttling reply) without reaching the store;
- `reset`: the connection is reset (TCP RST) before the request reaches the store;
- `stall`: held `stall_s` seconds, then forwarded;
- `drop`: forwarded, and the connection reset instead of the store's reply (the request took
  effect; its client cannot know);
- otherwise forwarded as is.

Apart from the draw, `hold` names a path fragment: a PUT whose path holds it is never answered
(counted as `held`), so a test can kill a writer at the exact moment it waits on that write
(`optimize` waiting on its Delta commit after its compacted files are written).

The faults are bounded: after `max_in_a_row` faults in a row (counted over all clients) the
next request goes through, so a lone client with a retry budget above that always gets an
answer. Every fault but `drop` happens
before the store sees the request, so retrying it is always safe; a `drop` tests whether a
client's retry of a request that took effect is (`drop` is off unless asked for).

The proxy runs in a child process, as `local_s3`'s endpoint does: deltalake holds Python's GIL
while it waits on S3, so a proxy thread of the caller's process could never answer it.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

KINDS = ("slowdown", "reset", "stall", "drop")
SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
            b"<Message>Please reduce your request rate.</Message></Error>")
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "expect", "upgrade",
        "proxy-connection", "te", "trailer"}


@dataclass(frozen=True)
class Faults:
    """Shares of requests failed each way (together at most 1), the stall's length, the seed."""

    slowdown: float = 0.1
    reset: float = 0.05
    stall: float = 0.02
    drop: float = 0.0
    stall_s: float = 2.0
    max_in_a_row: int = 3
    seed: int = 7
    hold: str | None = None

    def __post_init__(self):
        shares = [getattr(self, kind) for kind in KINDS]
        if min(shares) < 0 or sum(shares) > 1:
            raise ValueError("fault shares must be >= 0 and add up to at most 1")


class _Draw:
    """The seeded outcome of each request, bounded by `max_in_a_row`."""

    def __init__(self, faults: Faults):
        import random

        self.faults, self.rng, self.in_a_row = faults, random.Random(faults.seed), 0

    def __call__(self) -> str | None:
        x, edge = self.rng.random(), 0.0
        kind = None
        for name in KINDS:
            edge += getattr(self.faults, name)
            if x < edge:
                kind = name
                break
        if kind is None or self.in_a_row >= self.faults.max_in_a_row:
            self.in_a_row = 0
            return None
        self.in_a_row += 1
        return kind


def _serve(conn, upstream: str, faults: dict) -> None:
    """The child process: proxy to `upstream` until told to stop, answering tally requests."""
    import asyncio
    import logging
    import socket
    import struct
    import threading

    from aiohttp import ClientSession, ClientTimeout, web
    from yarl import URL

    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # each injected reset
    draw, tally = _Draw(Faults(**faults)), Counter()
    stall_s, hold = faults["stall_s"], faults["hold"]

    def reset(request: web.Request) -> None:
        sock = request.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        request.transport.abort()
        raise ConnectionResetError("injected connection reset")

    async def handle(request: web.Request) -> web.StreamResponse:
        tally["requests"] += 1
        if hold and request.method == "PUT" and hold in request.path:
            tally["held"] += 1
            await asyncio.Event().wait()  # until the proxy stops
        kind = draw()
        if kind:
            tally[kind] += 1
        if kind == "slowdown":
            return web.Response(status=503, body=SLOWDOWN, content_type="application/xml")
        if kind == "reset":
            reset(request)
        if kind == "stall":
            await asyncio.sleep(stall_s)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with request.app["session"].request(
                request.method, URL(upstream + request.raw_path, encoded=True), headers=headers,
                data=body, allow_redirects=False) as reply:
            payload = await reply.read()
            if kind == "drop":
                reset(request)
            out = {k: v for k, v in reply.headers.items() if k.lower() not in _HOP}
            if request.method == "HEAD" and "Content-Length" in reply.headers:
                out["Content-Length"] = reply.headers["Content-Length"]
            return web.Response(status=reply.status, headers=out,
                                body=None if request.method == "HEAD" else payload)

    async def main() -> None:
        app = web.Application(client_max_size=1 << 31)
        app["session"] = ClientSession(auto_decompress=False, timeout=ClientTimeout(total=600))
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        stop = asyncio.get_running_loop().create_future()

        def listen() -> None:
            conn.send(port)
            while True:
                try:
                    message = conn.recv()
                except EOFError:
                    message = "stop"
                if message == "stop":
                    loop.call_soon_threadsafe(stop.set_result, None)
                    return
                conn.send(dict(tally))

        loop = asyncio.get_running_loop()
        threading.Thread(target=listen, daemon=True).start()
        await stop
        await app["session"].close()
        await runner.cleanup()

    asyncio.run(main())


@contextmanager
def flaky_proxy(upstream: str, faults: Faults = Faults()) -> Iterator[tuple[str, Callable]]:
    """Start the proxy in front of `upstream` (an http:// endpoint); yield its URL and a function
    returning its tally so far (`requests`, each fault kind and `held`)."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proxy = ctx.Process(target=_serve, args=(theirs, upstream.rstrip("/"), asdict(faults)),
                        daemon=True, name="emoray-flaky-s3")
    proxy.start()
    theirs.close()  # the child's end: a dead child then reads as EOF here, not a hang
    if not ours.poll(60):
        proxy.kill()
        raise RuntimeError("the flaky S3 proxy did not start within 60 s")
    port = ours.recv()

    def tally() -> dict[str, int]:
        ours.send("tally")
        counts = ours.recv()
        return {k: counts.get(k, 0) for k in ("requests", *KINDS, "held")}

    try:
        yield f"http://127.0.0.1:{port}", tally
    finally:
        try:
            ours.send("stop")
        except OSError:  # the child is gone already
            pass
        proxy.join(10)
        if proxy.is_alive():
            proxy.kill()
