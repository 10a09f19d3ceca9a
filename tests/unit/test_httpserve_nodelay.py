"""The sockets `agentfactory.httpserve.bind` makes for uvicorn (webhook, transparency log): connections get TCP_NODELAY.

asyncio sets TCP_NODELAY on accepted connections only when the listening socket's protocol is IPPROTO_TCP;
without it a response written as head then body waits for the client's delayed ACK (about 40 ms a request).
"""

from __future__ import annotations

import asyncio
import socket

from agentfactory.httpserve import bind


def test_connections_accepted_by_asyncio_on_a_bound_socket_have_tcp_nodelay() -> None:
    sock = bind("127.0.0.1:0", "127.0.0.1:8080")
    assert sock.proto == socket.IPPROTO_TCP
    seen: list[int] = []

    async def main() -> None:
        accepted = asyncio.Event()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            conn = writer.get_extra_info("socket")
            seen.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
            accepted.set()

        server = await asyncio.start_server(on_client, sock=sock)
        port = sock.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await accepted.wait()
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    assert seen and seen[0] != 0
