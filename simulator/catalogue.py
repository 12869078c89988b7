"""The simulated registry: models a node can pull, with realistic sizes and defaults."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from .names import ModelName, parse_name

MT_MODEL = "application/vnd.ollama.image.model"
MT_PROJECTOR = "application/vnd.ollama.image.projector"
MT_TEMPLATE = "application/vnd.ollama.image.template"
MT_SYSTEM = "application/vnd.ollama.image.system"
MT_PARAMS = "application/vnd.ollama.image.params"
MT_LICENSE = "application/vnd.ollama.image.license"
MT_MESSAGES = "application/vnd.ollama.image.messages"
MT_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str  # "sha256:<64hex>"
    size: int
    content: bytes | None = None  # small text layers keep their bytes

    def as_manifest(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def text_layer(media_type: str, data: bytes) -> Layer:
    return Layer(media_type, "sha256:" + sha256_hex(data), len(data), data)


def fake_layer(media_type: str, seed: str, size: int) -> Layer:
    """A big blob (weights) we never materialise: its digest is derived from a seed."""
    return Layer(media_type, "sha256:" + sha256_hex(seed.encode()), size)


@dataclass(frozen=True)
class CatalogueModel:
    """One model:tag in the simulated registry."""

    name: str  # "qwq:32b"
    family: str
    parameter_size: str
    quantization: str
    weights_size: int
    context_length: int
    parameter_count: int
    capabilities: tuple[str, ...] = ("completion", "tools")
    params: dict[str, Any] = field(default_factory=dict)
    template: str = "{{ .Prompt }}"
    system: str = ""
    license: str = ""
    projector_size: int = 0
    embedding_length: int = 4096
    kv_bytes_per_token: int = 262144
    aliases: tuple[str, ...] = ()

    @property
    def arch(self) -> str:
        return self.family

    def layers(self) -> list[Layer]:
        out = [fake_layer(MT_MODEL, f"weights:{self.name}", self.weights_size)]
        if self.projector_size:
            out.append(fake_layer(MT_PROJECTOR, f"projector:{self.name}", self.projector_size))
        if self.template:
            out.append(text_layer(MT_TEMPLATE, self.template.encode()))
        if self.system:
            out.append(text_layer(MT_SYSTEM, self.system.encode()))
        if self.license:
            out.append(text_layer(MT_LICENSE, self.license.encode()))
        if self.params:
            out.append(text_layer(MT_PARAMS, json.dumps(self.params, sort_keys=True).encode()))
        return out

    def config(self) -> Layer:
        cfg = {"model_format": "gguf", "model_family": self.family, "model_families": [self.family],
               "model_type": self.parameter_size, "file_type": self.quantization,
               "architecture": "amd64", "os": "linux",
               "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256_hex(self.name.encode())}"]}}
        return text_layer(MT_CONFIG, json.dumps(cfg, sort_keys=True).encode())


_MISTRAL_TMPL = ("{{- if .Messages }}{{- range $index, $_ := .Messages }}{{- if eq .Role \"user\" }}"
                 "[INST] {{ .Content }}[/INST]{{- else if eq .Role \"assistant\" }} {{ .Content }}</s>"
                 "{{- end }}{{- end }}{{- else }}[INST] {{ .Prompt }}[/INST]{{- end }} {{ .Response }}")
_CHATML_TMPL = ("{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
                "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
                "<|im_start|>assistant\n")
_LLAMA3_TMPL = ("{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
                "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n")
_CHATML_STOP = ["<|im_start|>", "<|im_end|>"]

_MODELS = [
    CatalogueModel("codestral:22b", "llama", "22.2B", "Q4_0", 12569164800, 32768, 22247282688,
                   params={"stop": ["[INST]", "[/INST]"]}, template=_MISTRAL_TMPL,
                   license="# Mistral AI Non-Production License\n", kv_bytes_per_token=229376,
                   embedding_length=6144, aliases=("codestral:latest",)),
    CatalogueModel("qwq:32b", "qwen2", "32.8B", "Q4_K_M", 19851336256, 40960, 32763876352,
                   params={"repeat_penalty": 1, "stop": _CHATML_STOP, "temperature": 0.6,
                           "top_k": 40, "top_p": 0.95},
                   template=_CHATML_TMPL, license="Apache License 2.0\n", embedding_length=5120,
                   aliases=("qwq:latest",)),
    CatalogueModel("qwen3:32b", "qwen3", "32.8B", "Q4_K_M", 20201253376, 40960, 32762123264,
                   capabilities=("completion", "tools", "thinking"),
                   params={"repeat_penalty": 1, "stop": _CHATML_STOP, "temperature": 0.6,
                           "top_k": 20, "top_p": 0.95},
                   template=_CHATML_TMPL + "{{ if .Think }}<think>{{ end }}",
                   license="Apache License 2.0\n", embedding_length=5120),
    CatalogueModel("qwen2.5-coder:32b", "qwen2", "32.8B", "Q4_K_M", 19851336960, 32768,
                   32763876352, capabilities=("completion", "tools", "insert"),
                   params={"stop": ["<|endoftext|>"]}, template=_CHATML_TMPL,
                   system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
                   license="Apache License 2.0\n", embedding_length=5120),
    CatalogueModel("llama3.2:1b", "llama", "1.2B", "Q8_0", 1321082688, 131072, 1235814432,
                   params={"stop": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]},
                   template=_LLAMA3_TMPL, license="LLAMA 3.2 COMMUNITY LICENSE AGREEMENT\n",
                   kv_bytes_per_token=32768, embedding_length=2048),
    CatalogueModel("llama3.1:8b", "llama", "8.0B", "Q4_K_M", 4920738944, 131072, 8030261248,
                   params={"stop": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]},
                   template=_LLAMA3_TMPL, license="LLAMA 3.1 COMMUNITY LICENSE AGREEMENT\n",
                   kv_bytes_per_token=131072, aliases=("llama3.1:latest",)),
    CatalogueModel("llava:7b", "llama", "7B", "Q4_0", 4113289088, 32768, 7241732096,
                   capabilities=("completion", "vision"), projector_size=624434368,
                   params={"stop": ["[INST]", "[/INST]"]}, template=_MISTRAL_TMPL,
                   license="Apache License 2.0\n", aliases=("llava:latest",)),
    CatalogueModel("nomic-embed-text:v1.5", "nomic-bert", "137M", "F16", 274290656, 2048,
                   136727040, capabilities=("embedding",), params={"num_ctx": 8192},
                   template="", license="Apache License 2.0\n", embedding_length=768,
                   kv_bytes_per_token=0, aliases=("nomic-embed-text:latest",)),
    CatalogueModel("all-minilm:22m", "bert", "23M", "F16", 45949216, 512, 22565376,
                   capabilities=("embedding",), params={}, template="",
                   license="Apache License 2.0\n", embedding_length=384, kv_bytes_per_token=0,
                   aliases=("all-minilm:latest",)),
]

Catalogue = dict[str, CatalogueModel]


def build_catalogue(models: list[CatalogueModel]) -> Catalogue:
    """Index by every `model:tag` (lower-case), aliases included."""
    out: Catalogue = {}
    for m in models:
        for key in (m.name, *m.aliases):
            out[key.lower()] = m
    return out


CATALOGUE: Catalogue = build_catalogue(_MODELS)


def lookup(catalogue: Catalogue, name: ModelName | str) -> CatalogueModel | None:
    """Resolve a name against the catalogue by model:tag (any host/namespace = a mirror)."""
    n = parse_name(name) if isinstance(name, str) else name
    if n is None:
        return None
    return catalogue.get(f"{n.model}:{n.tag}".lower())
