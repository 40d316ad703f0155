"""A stand-in for JupyterLab in a session container, run as its own process so its
memory is not the proxy's: ``python tests/unit/web/fake_app.py --key HEX``.

It checks the apps secret as JupyterLab does (``Authorization: token``, derived
from the key and the session id in the path) and serves, under ``/s/{id}/lab/``:
``bytes?size=N`` (N bytes streamed in 1 MiB chunks), ``upload`` (counts a
streamed body), ``headers`` (what it was sent), ``ping`` (a few bytes),
``api/kernels`` (kernel states; ``POST busy`` toggles one busy), a WebSocket
echo at ``ws`` (``close:CODE`` closes with that code), and ``redirect``.
It prints the port it listens on, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from sandman.environments.apps import apps_secret

CHUNK = 1 << 20
PREFIX = "/s/{session_id}/lab"


def build(key: bytes) -> Starlette:
    state = {"busy": False}
    block = bytes(CHUNK)

    def allowed(session_id: str, authorization: str | None) -> bool:
        return authorization == f"token {apps_secret(key, session_id)}"

    async def guard(request: Request) -> Response | None:
        if not allowed(request.path_params["session_id"], request.headers.get("authorization")):
            return PlainTextResponse("bad token", 403)
        return None

    async def data(request: Request) -> Response:
        refused = await guard(request)
        if refused is not None:
            return refused
        size = int(request.query_params.get("size", CHUNK))

        async def body() -> AsyncIterator[bytes]:
            left = size
            while left > 0:
                piece = block if left >= CHUNK else block[:left]
                left -= len(piece)
                yield piece

        return StreamingResponse(
            body(),
            media_type="application/octet-stream",
            headers={"Content-Length": str(size)},
        )

    async def upload(request: Request) -> Response:
        refused = await guard(request)
        if refused is not None:
            return refused
        total, digest = 0, hashlib.sha256()
        async for chunk in request.stream():
            total += len(chunk)
            digest.update(chunk)
        return JSONResponse({"bytes": total, "sha256": digest.hexdigest()})

    async def headers(request: Request) -> Response:
        refused = await guard(request)
        if refused is not None:
            return refused
        response = JSONResponse({"headers": request.headers.items(), "path": request.url.path})
        response.set_cookie("_xsrf", "fromapp", path="/")
        response.raw_headers.append((b"set-cookie", b"sandman_apps=stolen; Path=/"))
        return response

    async def ping(request: Request) -> Response:
        refused = await guard(request)
        return refused or PlainTextResponse("pong")

    async def redirect(request: Request) -> Response:
        host = request.headers["host"]
        target = f"http://{host}{request.url.path.rsplit('/', 1)[0]}/ping"
        return Response(status_code=302, headers={"Location": target})

    async def kernels(request: Request) -> Response:
        refused = await guard(request)
        if refused is not None:
            return refused
        if request.method == "POST":
            state["busy"] = not state["busy"]
        busy = "busy" if state["busy"] else "idle"
        return JSONResponse([{"id": "k1", "execution_state": busy}])

    async def echo(websocket: WebSocket) -> None:
        session_id = websocket.path_params["session_id"]
        if not allowed(session_id, websocket.headers.get("authorization")):
            await websocket.close(1008)
            return
        offered = websocket.headers.get("sec-websocket-protocol")
        await websocket.accept(subprotocol=offered.split(",")[0].strip() if offered else None)
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    text = message["text"]
                    if text.startswith("close:"):
                        await websocket.close(int(text[6:]), "asked to")
                        return
                    if text == "origin":
                        text = websocket.headers.get("origin", "")
                    await websocket.send_text(text)
                elif message.get("bytes") is not None:
                    await websocket.send_bytes(message["bytes"])
        except WebSocketDisconnect:
            return

    return Starlette(
        routes=[
            Route(PREFIX + "/bytes", data),
            Route(PREFIX + "/upload", upload, methods=["POST", "PUT"]),
            Route(PREFIX + "/headers", headers, methods=["GET", "POST"]),
            Route(PREFIX + "/ping", ping),
            Route(PREFIX + "/redirect", redirect),
            Route(PREFIX + "/api/kernels", kernels, methods=["GET", "POST"]),
            WebSocketRoute(PREFIX + "/ws", echo),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True)
    args = parser.parse_args()
    sock = socket.socket(
        socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP
    )  # asyncio sets TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(build(bytes.fromhex(args.key)), log_level="warning")
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
