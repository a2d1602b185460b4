"""The proxy's aiohttp client (``app/client.py``), against a real server on loopback."""

from __future__ import annotations

from app import client
from tests.support import metadata
from tests.upstream import FakeUpstream, Reply, answer


async def test_a_response_sheds_the_request_headers_and_still_reads() -> None:
    """aiohttp keeps the request's headers on the response for its whole life; after
    ``shed_request_headers`` the response has none of them, and its body reads as before."""
    fake = FakeUpstream(metadata("llm", [("POST", "/v1/chat/completions")]))
    sse = b"data: {}\n\ndata: [DONE]\n\n"
    fake.route("POST", "/v1/chat/completions",
               answer(Reply(200, sse, [("content-type", "text/event-stream")])))  # fmt: skip
    async with fake:
        session = client.make_client(max_connections=4, keepalive_s=1)
        try:
            url = fake.url + "/v1/chat/completions"
            headers = {"user-agent": "OpenAI/Python", "x-stainless-lang": "python"}
            async with session.post(url, headers=headers, data=b"{}") as resp:
                assert resp.request_info.headers["x-stainless-lang"] == "python"
                client.shed_request_headers(resp)
                assert dict(resp.request_info.headers) == {}
                assert (resp.request_info.method, str(resp.request_info.url)) == ("POST", url)
                assert resp.content_type == "text/event-stream"
                assert await resp.read() == sse
        finally:
            await session.close()
    assert fake.calls("POST", "/v1/chat/completions")[0].header("x-stainless-lang") == "python"
