"""The official `ollama` Python client accepts everything the simulator sends."""

from __future__ import annotations

import ollama
import pytest

from simulator import Fault, SimNode


@pytest.fixture
async def c(node: SimNode):
    client = ollama.AsyncClient(host=node.url)
    yield client
    await client.close()


async def test_management_round_trip(node: SimNode, c: ollama.AsyncClient) -> None:
    assert (await c.list()).models[0].model == "codestral:22b"
    progress = [p async for p in await c.pull("qwq:32b", stream=True)]
    assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
    assert any(p.completed for p in progress)
    await c.create(model="codestral-30k", from_="codestral:22b",
                   parameters={"num_ctx": 30000, "temperature": 0.1}, system="Be brief.")
    info = await c.show("codestral-30k")
    assert info.details.parent_model == "codestral:22b" and 'SYSTEM """Be brief."""' in info.modelfile
    assert "num_ctx                        30000" in info.parameters
    assert info.modified_at is not None and "completion" in info.capabilities
    await c.copy("qwq:32b", "qwq-backup")
    await c.delete("qwq:32b")
    names = {m.model for m in (await c.list()).models}
    assert names == {"codestral:22b", "codestral-30k:latest", "qwq-backup:latest"}
    with pytest.raises(ollama.ResponseError) as err:
        await c.show("nope")
    assert err.value.status_code == 404 and err.value.error == "model 'nope' not found"
    with pytest.raises(ollama.ResponseError):
        async for _ in await c.pull("nosuch:1b", stream=True):
            pass


async def test_inference_round_trip(node: SimNode, c: ollama.AsyncClient) -> None:
    node.install("nomic-embed-text")
    r = await c.chat(model="codestral:22b", messages=[{"role": "user", "content": "hi"}])
    assert r.message.content.startswith("Simulated answer") and r.done_reason == "stop" and r.eval_count
    parts = [p async for p in await c.chat(model="codestral:22b", messages=[{"role": "user", "content": "hi"}],
                                           stream=True)]
    assert "".join(p.message.content for p in parts) == r.message.content and parts[-1].done
    g = await c.generate(model="codestral:22b", prompt="hi", options={"num_predict": 2})
    assert g.done_reason == "length" and g.context
    await c.generate(model="codestral:22b", keep_alive=-1)
    ps = await c.ps()
    assert ps.models[0].name == "codestral:22b" and ps.models[0].expires_at.year > 2200
    e = await c.embed(model="nomic-embed-text", input=["a", "b"])
    assert len(e.embeddings) == 2 and len(e.embeddings[0]) == 768
    legacy = await c.embeddings(model="nomic-embed-text", prompt="a")
    assert len(legacy.embedding) == 768
    assert (await c.generate(model="codestral:22b", keep_alive=0)).done_reason == "unload"


async def test_client_sees_a_mid_stream_error(node: SimNode, c: ollama.AsyncClient) -> None:
    node.set_fault(Fault.FAIL_MID_STREAM, after_chunks=2, message="runner crashed")
    got = []
    with pytest.raises(ollama.ResponseError) as err:
        async for part in await c.chat(model="codestral:22b", messages=[{"role": "user", "content": "hi"}],
                                       stream=True):
            got.append(part)
    assert len(got) == 2 and err.value.error == "runner crashed"
