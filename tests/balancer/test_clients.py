"""Real client libraries through the balancer."""
from __future__ import annotations

import ollama
import openai
import pytest

from simulator import Fault

pytestmark = pytest.mark.timeout(30)
MESSAGES = [{"role": "user", "content": "Say hello"}]


async def test_ollama_client(sim, make_balancer) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b", "all-minilm:22m"])
    b = await make_balancer([node])
    async with ollama.AsyncClient(host=b.url) as client:
        await _ollama_calls(client)


async def _ollama_calls(client: ollama.AsyncClient) -> None:
    reply = await client.chat(model="codestral:22b", messages=MESSAGES)
    assert reply.message.content and reply.done
    parts = [p async for p in await client.chat(model="codestral:22b", messages=MESSAGES,
                                                  stream=True)]
    assert len(parts) > 1 and parts[-1].done
    emb = await client.embed(model="all-minilm:22m", input=["a", "b"])
    assert len(emb.embeddings) == 2
    listed = await client.list()
    assert {m.model for m in listed.models} == {"codestral:22b", "all-minilm:22m"}
    with pytest.raises(ollama.ResponseError) as exc:
        await client.chat(model="nope", messages=MESSAGES)
    assert exc.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as exc:
        await client.pull("qwq:32b")
    assert exc.value.status_code == 403


async def test_ollama_client_sees_a_mid_stream_failure(sim, make_balancer) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b"])
    node.set_fault(Fault.RST_MID_STREAM, after_chunks=2)
    b = await make_balancer([node])
    async with ollama.AsyncClient(host=b.url) as client:
        with pytest.raises(ollama.ResponseError, match="connection reset"):
            async for _ in await client.chat(model="codestral:22b", messages=MESSAGES,
                                             stream=True):
                pass


async def test_openai_client(sim, make_balancer) -> None:
    node = await sim.add_node(name="gpu-1", models=["codestral:22b", "all-minilm:22m"])
    b = await make_balancer([node])
    client = openai.AsyncOpenAI(base_url=b.url + "/v1", api_key="unused", max_retries=0)
    reply = await client.chat.completions.create(model="codestral:22b", messages=MESSAGES)
    assert reply.choices[0].message.content
    stream = await client.chat.completions.create(model="codestral:22b", messages=MESSAGES,
                                                  stream=True)
    chunks = [c async for c in stream]
    assert len(chunks) > 1 and chunks[-1].choices[0].finish_reason
    emb = await client.embeddings.create(model="all-minilm:22m", input=["a", "b"])
    assert len(emb.data) == 2
    models = await client.models.list()
    assert {m.id for m in models.data} == {"codestral:22b", "all-minilm:22m"}
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=MESSAGES)
    # Ollama ends a failed /v1 stream without [DONE] but cleanly; the balancer cuts it
    node.set_fault(Fault.FAIL_MID_STREAM, after_chunks=2)
    stream = await client.chat.completions.create(model="codestral:22b", messages=MESSAGES,
                                                  stream=True)
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass
    await client.close()
