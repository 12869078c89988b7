"""balancer: a model-aware, drop-in replacement for ollama_load_balancer.

    b = Balancer(Settings(silence_timeout=120.0), [NodeSpec("gpu-1", "http://10.0.0.5:11434")])
    await b.start(host="127.0.0.1", port=11434)     # port 0: any free port; b.url after
    b.replace_nodes([...])                          # live; streams on removed nodes finish
    b.update_settings(Settings(...))                # live; requests under way keep theirs
    b.set_draining("gpu-1", "qwq:32b", True)        # keep a model off a node meanwhile
    await b.refresh()                               # re-poll /api/tags and /api/ps now
    b.states(); b.metrics                           # NodeState list; Metrics counters
    await b.stop(drain_timeout=30.0)                # stop accepting, finish streams, cancel

Command line: python -m balancer --server http://HOST:PORT=NAME ... [--timeout N] [--bind H:P]
[--queue-timeout N]. With a queue timeout the balancer queues and chooses by cost (cost.py,
knowledge.py, waitlist.py); without, it keeps the peer's rule (scheduling.py).
It runs on uvloop (a dependency except on Windows), as does the daemon: about a third less CPU per
relayed chunk (scripts/bench_balancer.py --cpu 3). An embedding program picks its own loop.
"""
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
