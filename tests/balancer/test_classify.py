"""Request classification and error shapes (pure)."""
from __future__ import annotations

import json

import pytest

from balancer.classify import classify, normalize_model
from balancer.errors import error_body, not_found_message


@pytest.mark.parametrize("sent,normal", [
    ("qwq", "qwq:latest"), ("QWQ:32B", "qwq:32b"), ("library/qwq:32b", "qwq:32b"),
    ("registry.ollama.ai/library/qwq", "qwq:latest"), ("me/mine", "me/mine:latest"),
    ("host:5000/ns/m:tag", "host:5000/ns/m:tag"), ("host:5000/ns/m", "host:5000/ns/m:latest"),
])
def test_normalize_model(sent: str, normal: str) -> None:
    assert normalize_model(sent) == normal


@pytest.mark.parametrize("method,path,body,kind,model,framing,slot", [
    ("POST", "/api/chat", b'{"model":"m"}', "inference", "m:latest", "ndjson", True),
    ("POST", "/api/chat", b'{"model":"m","stream":false}', "inference", "m:latest", "none", True),
    ("POST", "/api/generate", b'{"model":"m:1"}', "inference", "m:1", "ndjson", True),
    ("POST", "/v1/chat/completions", b'{"model":"m"}', "inference", "m:latest", "none", True),
    ("POST", "/v1/chat/completions", b'{"model":"m","stream":true}', "inference", "m:latest",
     "openai", True),
    ("POST", "/v1/responses", b'{"model":"m","stream":true}', "inference", "m:latest",
     "responses", True),
    ("POST", "/v1/messages", b'{"model":"m","stream":true}', "inference", "m:latest",
     "anthropic", True),
    ("POST", "/api/embed", b'{"model":"e","input":["a","b"]}', "inference", "e:latest", "none", True),
    ("POST", "/v1/embeddings", b'{"model":"e","input":"a"}', "inference", "e:latest", "none", True),
    ("POST", "/api/show", b'{"model":"m"}', "model_info", "m:latest", "none", False),
    ("POST", "/api/show", b'{"name":"m"}', "model_info", "m:latest", "none", False),
    ("GET", "/v1/models/m:1", b"", "model_info", "m:1", "none", False),
    ("GET", "/api/tags", b"", "listing", None, "none", False),
    ("HEAD", "/api/tags", b"", "listing", None, "none", False),
    ("GET", "/api/ps", b"", "listing", None, "none", False),
    ("GET", "/v1/models", b"", "listing", None, "none", False),
    ("POST", "/api/pull", b'{"model":"m"}', "management", None, "none", False),
    ("DELETE", "/api/delete", b'{"model":"m"}', "management", None, "none", False),
    ("POST", "/api/blobs/sha256:abc", b"GGUF", "management", None, "none", False),
    ("HEAD", "/api/blobs/sha256:abc", b"", "other", None, "none", False),
    ("GET", "/api/version", b"", "other", None, "none", False),
    ("POST", "/api/chat", b"not json", "inference", None, "ndjson", True),
    ("POST", "/v1/audio/transcriptions", b"--multipart", "other", None, "none", True),
])
def test_classify(method: str, path: str, body: bytes, kind: str, model: str | None,
                  framing: str, slot: bool) -> None:
    info = classify(method, path, body)
    assert (info.kind, info.model if kind != "management" else None, info.framing,
            info.uses_slot) == (kind, model, framing, slot)


def test_error_shapes() -> None:
    body, ctype = error_body("/api/chat", 404, not_found_message("/api/chat", "x"))
    assert body == b'{"error":"model \'x\' not found"}' and ctype.startswith("application/json")
    body, _ = error_body("/api/embed", 404, not_found_message("/api/embed", "x"))
    assert json.loads(body) == {"error": 'model "x" not found, try pulling it first'}
    body, ctype = error_body("/v1/chat/completions", 404, "model 'x' not found")
    assert json.loads(body) == {"error": {"message": "model 'x' not found",
                                          "type": "not_found_error", "param": None, "code": None}}
    assert body.endswith(b"\n") and ctype == "application/json"
    body, _ = error_body("/v1/messages", 503, "busy")
    obj = json.loads(body)
    assert obj["type"] == "error" and obj["error"] == {"type": "overloaded_error", "message": "busy"}
