"""balancer: a model-aware, drop-in replacement for ollama_load_balancer."""
from .classify import RequestInfo, classify
from .config import NodeSpec, Settings
from .fleet import Metrics, NodeState
from .scheduling import Decision, NodeView, Pick, Reject, Reliability, Snapshot, Wait, decide
from .server import Balancer

__version__ = "0.1.0"
__all__ = [
    "Balancer", "Decision", "Metrics", "NodeSpec", "NodeState", "NodeView", "Pick", "Reject",
    "Reliability", "RequestInfo", "Settings", "Snapshot", "Wait", "classify", "decide",
]
