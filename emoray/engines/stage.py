"""Engines in the pipeline: the checks before one starts (context length, memory), the message
when one fails to start, the Ray resources of one engine actor, `EngineStage`, the Ray actor
that answers prompt rows with either engine (`vllm_engine.VllmEngine` or
`seq2seq.Seq2SeqEngine`, chosen by the pipeline from the checkpoint; `base.Engine` says what
both do), and how the pipeline hands it batches (`ENGINE`'s mapper, `to_engines`)."""

from __future__ import annotations

import itertools
import random
import threading
import time
from dataclasses import asdict, dataclass

import pyarrow as pa

from emoray.config import EngineConfig
from emoray.contract import ACTORS, Stage, require
from emoray.errors import EXIT_ENGINE, EmorayError
from emoray.models import resolve_model, weight_files
from emoray.engines.scoring import Generation
from emoray.stages import count, sends_prompt, settle
from emoray.tasks import TASKS
from emoray.engines.base import Engine
from emoray.engines.vllm_engine import GIB, VllmEngine, cpu_kv_cache_bytes


class EngineStartError(EmorayError, RuntimeError):
    """The engine could not start (or would not fit); the message says which setting to change."""

    exit_code = EXIT_ENGINE


def check_fits(config: EngineConfig, local: bool = True) -> None:
    """Before any engine starts: the context length is one the checkpoint has, and (`local`:
    the engine runs on this machine, not on a cluster's worker) a CPU engine's weights plus
    KV cache fit the memory available here. Raises EngineStartError / ConfigError naming the
    setting to change."""
    import json
    from pathlib import Path

    import psutil

    from emoray.config import ConfigError

    model = resolve_model(config.model)
    if not model.decoder_only and config.tensor_parallel_size > 1:
        raise ConfigError(
            f"model {model.name} runs on the Transformers engine, one device per actor: set "
            "--tensor-parallel-size 1 (engine.tensor_parallel_size) and scale with "
            "--concurrency")
    config_file = Path(model.source) / "config.json"
    if config_file.is_file() and model.decoder_only:  # an encoder's limit cuts prompts instead
        checkpoint = json.loads(config_file.read_text())
        limit = checkpoint.get("max_position_embeddings")
        if limit and (checkpoint.get("rope_scaling") or {}).get("factor"):
            limit = int(limit * checkpoint["rope_scaling"]["factor"])
        if limit and config.max_model_len > limit:
            raise ConfigError(
                f"engine.max_model_len {config.max_model_len} is longer than model {model.name} "
                f"was built for ({limit} positions): set --max-model-len {limit} or less")
    if config.device != "cpu" or not local:
        return
    available = psutil.virtual_memory().available
    kv = cpu_kv_cache_bytes(config, available) if model.decoder_only else 0
    if kv is None:
        kv = int(config.gpu_memory_utilization * psutil.virtual_memory().total)
    weights = sum(f.stat().st_size for f in weight_files(model.source))
    if weights + kv > available:
        raise EngineStartError(
            f"the CPU engine would not fit in memory: model {model.name} needs "
            f"{weights / GIB:.1f} GiB of weights plus {kv / GIB:.1f} GiB of KV cache, and this "
            f"machine has {available / GIB:.1f} GiB available. Lower the KV cache "
            "(--kv-cache-gib, profile key engine.kv_cache_gib; or leave both it and "
            "--gpu-memory-utilization unset to size it to the machine), free memory, or use a "
            "smaller model.")


def start_failure(config: EngineConfig, error: BaseException) -> str:
    """One paragraph for an engine that failed to start: what, where, which settings."""
    import socket

    cause = str(error).strip().splitlines()
    reason = f"{type(error).__name__}: {cause[-1] if cause else ''}"
    return (f"the {config.device} engine for model {config.model} failed to start on "
            f"{socket.gethostname()} ({reason}). Check the engine settings: --device, "
            "--max-model-len, --gpu-memory-utilization (GPUs), --kv-cache-gib (CPUs), "
            "--tensor-parallel-size; run again with --verbose to see the engine's own log.")


def engine_resources(config: EngineConfig) -> dict:
    """Ray resources of one engine actor: its GPUs (tensor parallel size), or one CPU, plus
    the custom `node_resources` that keep it on the nodes meant for engines."""
    import ray

    device = config.device
    if device == "auto":
        device = "gpu" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"
    own = {"num_gpus": config.tensor_parallel_size} if device == "gpu" else {"num_cpus": 1}
    return {**own, "resources": dict(config.node_resources)} if config.node_resources else own


def can_host(resources: dict) -> bool:
    """Whether some alive Ray node offers what one engine actor asks for (`engine_resources`'
    shape); Ray would wait for one forever."""
    import ray

    need = {"CPU": resources.get("num_cpus", 0), "GPU": resources.get("num_gpus", 0),
            **resources.get("resources", {})}
    return any(node["Alive"] and all(node["Resources"].get(k, 0) >= v
                                     for k, v in need.items() if v)
               for node in ray.nodes())


@dataclass
class EngineClock:
    """One engine actor's time line (epoch seconds): when it came up, when its model was
    loaded, its first prompt, and the seconds it spent answering (inside `generate`); the Ray
    node it ran on."""

    started: float
    loaded: float | None = None
    first_prompt: float | None = None
    busy_s: float = 0.0
    node: str | None = None

    def report(self, end: float) -> dict:
        """Seconds from actor start to model loaded and to first prompt; busy and idle (from
        loaded to `end`, the run's end, when not answering) and the idle share."""
        held = end - self.loaded if self.loaded is not None else 0.0
        idle = max(held - self.busy_s, 0.0)
        since = (lambda t: round(t - self.started, 2) if t is not None else None)
        return {"node": self.node, "load_s": since(self.loaded),
                "first_prompt_s": since(self.first_prompt),
                "busy_s": round(self.busy_s, 2), "idle_s": round(idle, 2),
                "idle_share": round(idle / held, 4) if held > 0 else None}


def idle_share(reports: list[dict]) -> float | None:
    """Idle seconds over loaded seconds, all engine actors together: each actor's own share
    (from its unrounded seconds) weighted by its loaded seconds, so one actor's is its own."""
    rated = [r for r in reports if r["idle_share"] is not None]
    held = sum(r["idle_s"] + r["busy_s"] for r in rated)
    if not rated or held <= 0:
        return None
    return round(sum(r["idle_share"] * (r["idle_s"] + r["busy_s"]) for r in rated) / held, 4)


def _node_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


class EngineStage:
    """The engine actor (declared as `ENGINE`; `engines.pool` starts it, Ray Data's
    `call_engines` tasks hand it batches): adds the model's answer to each prompt
    row, from `engine_class` (an `engines.base.Engine`: `VllmEngine` or `Seq2SeqEngine`;
    any class with their `generate`). Rows whose `text_status` is not ok or that carry a
    `cached_output` (an answer stored for the same text) send no prompt."""

    def __init__(self, config: EngineConfig, stats=None, engine_class: type[Engine] = VllmEngine,
                 eager: bool = False):
        self.config = config
        self.stats = stats
        self.engine_class = engine_class
        self._engine: Engine | None = None
        self._failed: EngineStartError | None = None
        # calls run on `max_concurrency` threads (`batches_in_flight`): one loads the model, one
        # binds a new night; one at a time generates (the engine is not thread-safe), while the
        # others read their batch's columns or build their answers
        self._loading, self._binding = threading.Lock(), threading.Lock()
        self._generating = threading.Lock()
        self.clock = EngineClock(time.time(), node=_node_id())
        self.name = f"engine-{id(self):x}-{int(self.clock.started * 1e6) % 10**6:06d}"
        if stats is not None:
            settle(stats.actor_started.remote(self.clock.started))
        if eager:  # Ray Data builds its actors as the run starts: the load overlaps planning
            self.load()

    def begin_night(self, stats) -> None:
        """A kept engine's next night (`engines.pool.keep_warm`): report to its `stats`, on a
        new time line (up, and loaded if it is, from now)."""
        now = time.time()
        self.stats = stats
        self.clock = EngineClock(now, loaded=now if self._engine is not None else None,
                                 node=self.clock.node)
        self.name = f"{self.name.rsplit('-', 1)[0]}-{int(now * 1e6) % 10**6:06d}"
        if stats is not None:
            settle(stats.actor_started.remote(now))

    def load(self) -> None:
        """Load the model now; a failure is kept and raised with the first batch, as a lazy
        start's is."""
        try:
            self.engine
        except EngineStartError as e:
            self._failed = e

    @property
    def engine(self) -> Engine:
        """Loaded as the actor starts when the run knows it has prompts to send (`eager`),
        else on the first prompt, so a run with nothing new starts no engine."""
        with self._loading:
            if self._failed is not None:
                raise self._failed
            if self._engine is None:
                try:
                    self._engine = self.engine_class(self.config)
                except Exception as e:
                    message = start_failure(self.config, e)
                    if self.stats is not None:  # exception causes do not survive Ray's pickling
                        import ray

                        ray.get(self.stats.engine_failed.remote(message))
                    raise EngineStartError(message) from e
                self.clock.loaded = time.time()
                if self.stats is not None:
                    count(self.stats, engine_starts=1)
            return self._engine

    def __call__(self, batch: pa.Table, stats=None) -> pa.Table:
        """Answer `batch`, counting into `stats` (the night's, from `call_engines`;
        default the actor's own)."""
        require(batch, ENGINE)
        if stats is not None and stats != self.stats:  # restarted by Ray with an older night's
            with self._binding:
                if stats != self.stats:
                    self.begin_night(stats)
        rows = batch.select(["text", "task", "target", "text_status", "cached_output",
                             "cached_confidence", "cached_score", "cached_status"]).to_pydict()
        results: list[Generation] = [Generation(None)] * batch.num_rows
        todo, reused = [], 0
        expected = {t for t in set(rows["task"]) if self.config.decoding(TASKS[t]).expected}
        for i, (text_status, cached) in enumerate(zip(rows["text_status"], rows["cached_output"])):
            if cached is not None:
                results[i] = Generation(cached, rows["cached_confidence"][i],
                                        rows["cached_status"][i] == "truncated",
                                        expected=rows["cached_score"][i]
                                        if rows["task"][i] in expected else None)
                reused += 1
            elif sends_prompt(text_status, cached):
                todo.append(i)
        if todo:
            engine = self.engine
            if self.stats is not None:
                self.stats.mark.remote("first_prompt")
            with self._generating:
                t0 = time.time()
                self.clock.first_prompt = self.clock.first_prompt or t0
                done = engine.generate(
                    [TASKS[rows["task"][i]] for i in todo],
                    [rows["text"][i] for i in todo],
                    [rows["target"][i] for i in todo],
                )
                self.clock.busy_s += time.time() - t0
            for i, g in zip(todo, done):
                results[i] = g
        if self.stats is not None:  # in before the batch moves on (`stages.count`)
            self.stats.engine_clock.remote(self.name, asdict(self.clock))
            count(self.stats, prompts=len(todo), reused=reused,
                  prompt_tokens=sum(g.prompt_tokens for g in results),
                  output_tokens=sum(g.output_tokens for g in results))
        return with_answers(batch, results)


def with_answers(batch: pa.Table, results: list[Generation]) -> pa.Table:
    """`batch` with the engine stage's columns (`ENGINE.adds`) from one result per row."""
    columns = {
        "raw_output": pa.array([g.raw_output for g in results], pa.string()),
        "confidence": pa.array([g.confidence for g in results], pa.float64()),
        "truncated": pa.array([g.truncated for g in results], pa.bool_()),
        "error": pa.array([g.error for g in results], pa.string()),
        "finish_reason": pa.array([g.finish_reason for g in results], pa.string()),
        "prompt_tokens": pa.array([g.prompt_tokens for g in results], pa.int64()),
        "output_tokens": pa.array([g.output_tokens for g in results], pa.int64()),
        "expected_score": pa.array([g.expected for g in results], pa.float64()),
    }
    for name, values in columns.items():
        batch = batch.append_column(name, values)
    return batch


_turn = itertools.count(random.randrange(1 << 16))
"""This worker process's turn over the engine actors (from a random one, so the processes
running `call_engines` tasks spread their batches over the pool)."""


def call_engines(batch: pa.Table, actors: list, stats=None, budgeted: bool = False) -> pa.Table:
    """Ray Data task stage handing `batch` to one of the night's engine actors, with the
    night's `stats` (an actor Ray restarted mid-night was built with the first night's). A
    task, not an actor: Ray Data ends an actor pool with the execution that made it, so a pool
    of these calls started a process (~1-3 s) every night and every wave; tasks run in Ray's
    pooled workers. It holds no resources; the pipeline keeps `concurrency x
    batches_in_flight` of them running. With a budget (`budgeted`), a batch goes to an engine
    only while the night's `stats` admit it (`pipeline.RunStats.admit`); past the budget its rows
    are left for the next run: none of them comes out."""
    import ray

    if budgeted and not ray.get(stats.admit.remote()):
        return with_answers(batch.slice(0, 0), [])
    actor = actors[next(_turn) % len(actors)]
    return ray.get(actor.__call__.remote(batch, stats))


def to_engines(ds, stage: Stage, context: dict):
    """The engine stage over a Ray dataset: batches of `batch_size` handed to the night's
    actors (`context["engines"]`) by `call_engines` tasks, `concurrency x batches_in_flight` of
    them at once, holding no resources (the actors hold the devices)."""
    cfg = context["config"]
    return ds.map_batches(
        call_engines, batch_format="pyarrow", batch_size=cfg.batch_size,
        fn_kwargs={"actors": context["engines"].actors, "stats": context["stats"],
                   "budgeted": cfg.budget.is_set()},
        concurrency=cfg.concurrency * cfg.batches_in_flight, num_cpus=0)


ENGINE = Stage(
    "Engine", ACTORS, EngineStage,
    needs=("text", "task", "target", "text_status", "cached_output", "cached_confidence",
           "cached_score", "cached_status"),
    adds=("raw_output", "confidence", "truncated", "error", "finish_reason", "prompt_tokens",
          "output_tokens", "expected_score"),
    resources=engine_resources, mapper=to_engines)
"""The model's answer to each prompt row (or the reused stored answer)."""
