"""aiocoap's OSCORE (RFC 8613) as the peer of qos-oscore, for the interop test (loopback only).

  aiocoap_peer.py server CTXDIR PORT     serve POST /c on 127.0.0.1:PORT behind OSCORE;
                                          prints "ready" once listening
  aiocoap_peer.py client CTXDIR URI TEXT  POST TEXT to URI with OSCORE; prints the code and
                                          the payload of the response

CTXDIR is an aiocoap file-based security context (settings.json: sender-id_hex,
recipient-id_hex, secret_hex, salt_hex).
"""
import asyncio
import sys

import aiocoap
import aiocoap.resource as resource
from aiocoap.credentials import CredentialsMap
from aiocoap.oscore import FilesystemSecurityContext
from aiocoap.oscore_sitewrapper import OscoreSiteWrapper


class Echo(resource.Resource):
    async def render_post(self, request):
        return aiocoap.Message(
            code=aiocoap.CONTENT, payload=b"aiocoap saw: " + request.payload
        )


async def server(ctxdir, port):
    site = resource.Site()
    site.add_resource(["c"], Echo())
    creds = CredentialsMap()
    creds[":edge"] = FilesystemSecurityContext(ctxdir)
    ctx = await aiocoap.Context.create_server_context(
        OscoreSiteWrapper(site, creds), bind=("127.0.0.1", int(port))
    )
    print("ready", flush=True)
    try:
        await asyncio.sleep(120)
    finally:
        await ctx.shutdown()


async def client(ctxdir, uri, text):
    ctx = await aiocoap.Context.create_client_context()
    ctx.client_credentials[uri.rsplit("/", 1)[0] + "/*"] = FilesystemSecurityContext(ctxdir)
    try:
        req = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=text.encode())
        resp = await asyncio.wait_for(ctx.request(req).response, 30)
        print(resp.code)
        print(resp.payload.decode())
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(server(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(client(sys.argv[2], sys.argv[3], sys.argv[4]))
