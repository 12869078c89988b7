"""Model management effects: pull, create, blobs, show, delete, copy."""

from __future__ import annotations

import hashlib
import json

import httpx

from simulator import SimNode, Simulator, Timing

from .conftest import lines


def parse_params(text: str) -> dict[str, object]:
    """What a reconciler does with /api/show `parameters`."""
    out: dict[str, object] = {}
    for line in text.split("\n"):
        key, raw = line.split(None, 1)
        value: object = json.loads(raw) if raw.startswith('"') else \
            (raw == "true") if raw in ("true", "false") else float(raw)
        if key in out:
            prev = out[key]
            out[key] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            out[key] = value
    return out


async def test_pull_streams_progress_and_installs(client: httpx.AsyncClient, node: SimNode) -> None:
    r = await client.post("/api/pull", json={"model": "qwq:32b"})
    assert r.headers["content-type"] == "application/x-ndjson"
    objs = [json.loads(x) for x in lines(r.content)]
    statuses = [o.get("status") for o in objs]
    assert statuses[0] == "pulling manifest" and statuses[-3:] == ["verifying sha256 digest", "writing manifest",
                                                                   "success"]
    weights = [o for o in objs if o.get("total") == 19851336256]
    assert weights[0]["status"] == "pulling " + weights[0]["digest"][7:19]
    assert list(weights[0]) == ["status", "digest", "total"]          # completed omitted while 0
    assert len(weights) > 5 and list(weights[-1]) == ["status", "digest", "total", "completed"]
    done = [o["completed"] for o in weights[1:]]
    assert done == sorted(done) and done[-1] == 19851336256
    assert "qwq:32b" in node.installed_models()
    tags = (await client.get("/api/tags")).json()["models"]
    assert tags[0]["name"] == "qwq:32b" and tags[0]["size"] > 19851336256

    # a re-pull: every blob present gives one completed==total line, and still needs the registry
    r = await client.post("/api/pull", json={"model": "qwq", "stream": False})
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, b'{"status":"success"}', "application/json")
    r = await client.post("/api/pull", json={"model": "qwq:32b"})
    per_layer = [json.loads(x) for x in lines(r.content) if b"pulling " in x and b"manifest" not in x]
    assert all(o["completed"] == o["total"] for o in per_layer)
    assert (await client.get("/api/tags")).json()["models"][0]["digest"] == tags[0]["digest"]


async def test_pull_unknown_and_offline(client: httpx.AsyncClient, node: SimNode) -> None:
    r = await client.post("/api/pull", json={"model": "nosuch:1b"})
    assert r.status_code == 200 and r.content == \
        b'{"status":"pulling manifest"}\n{"error":"pull model manifest: file does not exist"}\n'
    r = await client.post("/api/pull", json={"model": "nosuch:1b", "stream": False})
    assert (r.status_code, r.json()) == (500, {"error": "pull model manifest: file does not exist"})
    node.registry_online = False
    r = await client.post("/api/pull", json={"model": "qwq:32b"})
    last = json.loads(lines(r.content)[-1])
    assert last == {"error": 'pull model manifest: Get "https://registry.ollama.ai/v2/library/qwq/manifests/32b": '
                             "dial tcp: lookup registry.ollama.ai: no such host"}
    assert node.installed_models() == ["codestral:22b"]


async def test_private_mirror_names_resolve_by_model_and_tag(client: httpx.AsyncClient, node: SimNode) -> None:
    r = await client.post("/api/pull", json={"model": "10.0.0.5:5000/library/qwq:32b", "insecure": True,
                                             "stream": False})
    assert r.json() == {"status": "success"}
    assert "10.0.0.5:5000/library/qwq:32b" in node.installed_models()
    node.registry_online = False
    r = await client.post("/api/pull", json={"model": "10.0.0.5:5000/library/qwq:32b", "insecure": True})
    assert b'"http://10.0.0.5:5000/v2/library/qwq/manifests/32b' in r.content


async def test_pull_time_follows_the_pull_speed(sim: Simulator) -> None:
    node = await sim.add_node(name="slow", timing=Timing(pull_bps=26e9, pull_tick=0.02))
    async with httpx.AsyncClient(base_url=node.url) as c:
        r = await c.post("/api/pull", json={"model": "llama3.2:1b"})
    weights = [json.loads(x) for x in lines(r.content) if b"1321082688" in x]
    assert len(weights) == 4   # 1.3 GB at 0.52 GB per tick: start line + 3 progress lines


async def test_create_from_merges_parameters_and_show_reads_back(client: httpx.AsyncClient,
                                                                 node: SimNode) -> None:
    body = {"model": "codestral-30k", "from": "codestral:22b",
            "parameters": {"num_ctx": 30000, "temperature": 0.1, "top_p": 0.95, "num_predict": 1000000}}
    r = await client.post("/api/create", json=body)
    objs = [json.loads(x) for x in lines(r.content)]
    st = [o["status"] for o in objs]
    assert st[0].startswith("using existing layer sha256:") and st[-2:] == ["writing manifest", "success"]
    assert any(s.startswith("creating new layer sha256:") for s in st)
    show = (await client.post("/api/show", json={"model": "codestral-30k"})).json()
    assert list(show) == ["license", "modelfile", "parameters", "template", "details", "model_info", "tensors",
                          "capabilities", "modified_at"]
    assert show["details"]["parent_model"] == "codestral:22b"
    params = parse_params(show["parameters"])
    assert params == {"num_ctx": 30000.0, "temperature": 0.1, "top_p": 0.95, "num_predict": 1e6,
                      "stop": ["[INST]", "[/INST]"]}   # the base's stop is inherited
    assert "num_predict                    1e+06" in show["parameters"].split("\n")
    assert "PARAMETER num_ctx 30000\n" in show["modelfile"]
    assert show["model_info"]["llama.context_length"] == 32768
    tags = {m["name"]: m for m in (await client.get("/api/tags")).json()["models"]}
    assert tags["codestral-30k:latest"]["details"]["parent_model"] == ""
    first_digest = tags["codestral-30k:latest"]["digest"]
    # identical content → identical digest; the weights are shared with the base
    r = await client.post("/api/create", json={**body, "stream": False})
    assert r.content == b'{"status":"success"}'
    tags = {m["name"]: m for m in (await client.get("/api/tags")).json()["models"]}
    assert tags["codestral-30k:latest"]["digest"] == first_digest
    # a list is replaced wholesale, request wins per key
    await client.post("/api/create", json={"model": "c2", "from": "codestral-30k", "parameters": {"stop": ["x"]},
                                           "system": "Be brief.", "stream": False})
    show = (await client.post("/api/show", json={"model": "C2"})).json()   # case-insensitive
    assert parse_params(show["parameters"])["stop"] == "x" and show["system"] == "Be brief."


async def test_create_from_missing_base_pulls_it_first(client: httpx.AsyncClient, node: SimNode) -> None:
    r = await client.post("/api/create", json={"model": "q", "from": "qwq:32b", "parameters": {"num_ctx": 8192}})
    st = [json.loads(x).get("status") for x in lines(r.content)]
    assert st[0] == "pulling manifest" and st.count("success") == 2
    assert {"qwq:32b", "q:latest"} <= set(node.installed_models())
    r = await client.post("/api/create", json={"model": "z", "from": "nosuch:1b"})
    assert r.content.endswith(b'{"error":"pull model manifest: file does not exist"}\n')
    r = await client.post("/api/create", json={"model": "z", "from": "nosuch:1b", "stream": False})
    assert r.status_code == 500 and "z:latest" not in node.installed_models()


async def test_blobs_and_create_from_gguf(client: httpx.AsyncClient, node: SimNode) -> None:
    data = b"GGUF" + bytes(range(256)) * 10
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert (await client.head(f"/api/blobs/{digest}")).status_code == 404
    assert (await client.head("/api/blobs/sha256:1234")).status_code == 400
    r = await client.post(f"/api/blobs/{digest}", content=b"other")
    assert r.status_code == 400 and r.json()["error"].startswith(f'digest mismatch, expected "{digest}", got "sha256:')
    r = await client.post(f"/api/blobs/{digest}", content=data)
    assert (r.status_code, r.content) == (201, b"")
    assert (await client.post(f"/api/blobs/{digest}", content=data)).status_code == 200
    assert (await client.head(f"/api/blobs/{digest}")).status_code == 200
    r = await client.post("/api/create", json={"model": "tiny:1b", "files": {"tiny.gguf": digest},
                                               "parameters": {"num_ctx": 2048}, "system": "You are tiny."})
    st = [json.loads(x)["status"] for x in lines(r.content)]
    assert st[0] == "parsing GGUF" and st[1] == f"using existing layer {digest}" and st[-1] == "success"
    show = (await client.post("/api/show", json={"model": "tiny:1b"})).json()
    assert show["system"] == "You are tiny." and parse_params(show["parameters"]) == {"num_ctx": 2048.0}
    # not a GGUF file: the error comes after "parsing GGUF"
    junk = b"not a model"
    jd = "sha256:" + hashlib.sha256(junk).hexdigest()
    await client.post(f"/api/blobs/{jd}", content=junk)
    r = await client.post("/api/create", json={"model": "junk", "files": {"j.gguf": jd}})
    assert r.content == b'{"status":"parsing GGUF"}\n{"error":"supplied file was not in GGUF format"}\n'
    r = await client.post("/api/create", json={"model": "junk", "files": {"j.gguf": jd}, "stream": False})
    assert r.status_code == 400


async def test_delete_and_copy(client: httpx.AsyncClient, node: SimNode) -> None:
    r = await client.post("/api/copy", json={"source": "codestral:22b", "destination": "backup"})
    assert (r.status_code, r.content) == (200, b"")
    tags = {m["name"]: m["digest"] for m in (await client.get("/api/tags")).json()["models"]}
    assert tags["backup:latest"] == tags["codestral:22b"]
    await client.post("/api/generate", json={"model": "codestral:22b", "keep_alive": -1})
    r = await client.request("DELETE", "/api/delete", json={"model": "codestral:22b"})
    assert (r.status_code, r.content) == (200, b"")
    assert node.installed_models() == ["backup:latest"]
    assert node.loaded_models() == ["codestral:22b"]          # delete does not unload
    r = await client.request("DELETE", "/api/delete", json={"model": "bad name!"})
    assert r.json() == {"error": 'name "bad name!" is invalid'}
    r = await client.post("/api/copy", json={"source": "backup", "destination": "a/b/c/d"})
    assert r.json() == {"error": 'destination "a/b/c/d" is invalid'}


async def test_push_streams(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/push", json={"model": "codestral:22b"})
    objs = [json.loads(x) for x in lines(r.content)]
    assert objs[0] == {"status": "retrieving manifest"} and "error" in objs[-1]
    await client.post("/api/copy", json={"source": "codestral:22b", "destination": "127.0.0.1:5000/me/c:1"})
    r = await client.post("/api/push", json={"model": "127.0.0.1:5000/me/c:1", "insecure": True})
    assert json.loads(lines(r.content)[-1]) == {"status": "success"}


async def test_private_registry_without_redirect_fails_like_ollama(client: httpx.AsyncClient,
                                                                   node: SimNode) -> None:
    node.registry_redirects = False
    r = await client.post("/api/pull", json={"model": "10.0.0.5:5000/library/qwq:32b", "insecure": True})
    assert r.content == b'{"status":"pulling manifest"}\n{"error":"http: no Location header in response"}\n'


async def test_an_interrupted_pull_resumes(sim: Simulator) -> None:
    node = await sim.add_node(name="r", timing=Timing(pull_bps=100e9, pull_tick=0.002))
    async with httpx.AsyncClient(base_url=node.url) as c:
        async with c.stream("POST", "/api/pull", json={"model": "qwq:32b"}) as r:
            async for line in r.aiter_lines():
                if json.loads(line).get("completed", 0) > 4e9:
                    break                      # the client gives up half-way
        await node.wait_for(lambda: node.state.partials)
        r = await c.post("/api/pull", json={"model": "qwq:32b"})
    weights = [json.loads(x) for x in lines(r.content) if b"19851336256" in x]
    assert weights[0]["completed"] > 4e9       # starts where the last attempt stopped
    assert "qwq:32b" in node.installed_models() and not node.state.partials
