"""A faithful Ollama simulator: many simulated nodes in one asyncio process.

    async with Simulator() as sim:                      # Simulator(catalogue=CATALOGUE, registry_online=True)
        node = await sim.add_node(name="gpu-1", models=["codestral:22b"], port=0,
                                  timing=Timing(), version="0.13.5", num_parallel=1)
        node.url, node.name, node.port
        node.set_fault(Fault.FAIL_MID_STREAM, after_chunks=3)   # also delay=, message=, paths=
        node.clear_fault()
        node.requests / node.write_requests() / node.clear_requests()
        node.installed_models(), node.loaded_models(), node.cancelled_generations
        node.loads, node.prompt_tokens, node.cached_prompt_tokens   # counters for benchmarks
        node.install("codestral-30k", from_="codestral:22b", parameters={"num_ctx": 30000})
        await node.wait_for(lambda: ..., timeout=5.0)
        node.registry_online = False
        await sim.remove_node(node)

    with SimulatorThread() as sim:                      # the same, for synchronous code
        node = sim.add_node(name="gpu-1", models=["qwq:32b"])

More `add_node` keywords: max_queue (512, OLLAMA_MAX_QUEUE), max_loaded (3), vram (24 GiB),
reply_tokens (12), keep_alive (300 s, OLLAMA_KEEP_ALIVE), context_length (None,
OLLAMA_CONTEXT_LENGTH), multiuser_cache (False, OLLAMA_MULTIUSER_CACHE).
Timing presets: Timing() (fast, the tests' default), Timing.instant() (same reported numbers,
nothing sleeps), Timing.realistic(time_scale=1.0) (a 24 GB GPU: 8-12 s loads, 2000 prompt
tokens/s, 30 tokens/s; time_scale 0.01 replays a day 100x faster); reported durations are
always the modelled ones.

The scheduler follows Ollama 0.13.5 (reference/ollama-api.md §7, sched.py):
- one runner per weights blob; a request with the same resolved load-time options (num_ctx,
  num_batch, ... with defaults filled) attaches to it, others reload it; a reload gets the
  request's keep_alive or the node's default (a -1 pin is lost);
- num_parallel slots per runner; requests for a loaded runner wait for a slot without bound
  and without a byte (node.waiting); only requests that need a (re)load queue, one load at a
  time, bounded by max_queue (503 "server busy" beyond, node.pending_loads);
- a model that does not fit evicts a victim (idle first, then shortest keep-alive, pinned
  last), whose keep-alive drops to 0 and whose requests (also new ones) finish first;
- each slot caches its prompt and answer; a request takes the free slot with the longest
  common prefix (multiuser_cache: the slot it continues, else the least recently used one
  with the shared prefix copied in); prompt_eval_count is the whole prompt even on a
  cache hit, prompt_eval_duration the time spent, load_duration all time spent getting the
  runner (waiting for other loads and evictions included);
- num_ctx defaults to 4096, from 0.15.5 to a VRAM tier clamped to the training context.
Faults (str enum, see faults.py for the paths each applies to by default): NONE, REFUSE,
NO_ANSWER, HANG_AFTER_HEADERS, FAIL_MID_STREAM, RST_MID_STREAM, FIN_MID_STREAM, SLOW_TOKENS,
HTTP_500, HTTP_503_BUSY, MODEL_NOT_FOUND, FREEZE, DISK_FULL.
Command line: `python -m simulator --nodes 3 --port 11501 --models codestral:22b,qwq:32b`.
"""

from .catalogue import CATALOGUE, Catalogue, CatalogueModel, build_catalogue
from .faults import Fault
from .node import RecordedRequest, SimNode
from .sim import Simulator
from .thread import SimulatorThread
from .timing import Timing

__all__ = ["CATALOGUE", "Catalogue", "CatalogueModel", "Fault", "RecordedRequest", "SimNode",
           "Simulator", "SimulatorThread", "Timing", "build_catalogue"]
