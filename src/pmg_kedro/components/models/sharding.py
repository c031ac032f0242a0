"""Per-user stages in shards: in this process, or as tasks on a Dask cluster (`dask.distributed`).

A stage (keywords, candidates, scores, user images, per-image metrics) hands its users' rows, the
data every shard reads and its models to `run_shards` with a module-level function that does the
work for a few users (the stage's one implementation: `components.method.keywords`, the `PMG` object,
`image_evaluation.score_images`). `run_shards` cuts the rows into shards of `shard_size` users
(a user's rows stay together, order kept) and returns the function's result per shard, in order:

    results = run_shards(settings, "costume.preference_keywords", behavior_texts,
                         keywords_of_shard, data={"items": items, "params": params},
                         models={"llm": llm})

- `cluster: none` with no `shard_size`: one call on every row in this process, as before sharding.
- `cluster: none` with a `shard_size`: the shards one after the other in this process.
- `cluster: local` (one single-threaded worker per core), `local_cuda` (one worker per GPU,
  dask-cuda) or a scheduler address (`tcp://host:8786`): one Dask task per shard.

Results depend on the shard size and the threads a shard runs with, never on where a shard runs:
a shard is the unit of batching (LLM batches, denoising chunks, scorer and feature batches), and
float results (one grey level of an image, the last bits of d_p) change with which users share a
batch or how many threads reduce it. Every sharded path therefore runs a shard with
`threads_per_worker` torch threads, so the same shard gives the same bits here or on a worker.

Models never travel with a task: a model loaded through the catalog carries its catalog definition
(`ModelDefinition`, attached by the project's datasets), and a worker loads each definition once
and keeps it (`worker_model`) until the cluster is closed (`close_clusters`) or the models are
released (`release_models`). A model without a definition is refused on a cluster.

Every shard's result is written to `folder` as soon as it is done, named by what it was computed
from (the shard's rows, the shared data, the model definitions, the threads): a run that stopped
half-way, started again, reuses the shards it had finished (the log says how many). A worker that
dies has its shards run again elsewhere (the scheduler reschedules them); a shard that fails for a
data reason fails the stage with its user ids and the cause.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pmg_kedro.components.models.params import settings_from_params
from pmg_kedro.components.reporting.environment import torch_threads

logger = logging.getLogger(__name__)

NO_CLUSTER = "none"
LOCAL = "local"
LOCAL_CUDA = "local_cuda"
DEFINITION_ATTRIBUTE = "catalog_definition"


@dataclass(frozen=True)
class ShardSettings:
    """Where per-user stages run (`params:sharding`, conf/base/parameters_sharding.yml).

    `cluster`: none | local | local_cuda | a scheduler address; `shard_size`: users per shard
    (None: one call on every user, only with `cluster: none`); `workers`: local workers (None: one
    per core; local_cuda: one per visible GPU); `threads_per_worker`: torch threads of a shard;
    `folder`: where shard results are kept for a restarted run (None: not kept); `memory_limit`:
    per local worker (Dask's, e.g. "4GiB"; None: Dask's share of the machine).
    """

    cluster: str = NO_CLUSTER
    shard_size: int | None = None
    workers: int | None = None
    threads_per_worker: int = 1
    folder: str | None = None
    memory_limit: str | None = None

    @classmethod
    def from_params(cls, params: Mapping | None) -> ShardSettings:
        settings = settings_from_params(cls, params, "sharding")
        if settings.cluster != NO_CLUSTER and not settings.shard_size:
            raise ValueError(
                f"sharding: cluster {settings.cluster!r} needs a shard_size (users per task)"
            )
        if settings.shard_size is not None and int(settings.shard_size) < 1:
            raise ValueError(
                f"sharding.shard_size: expected a positive number of users, got "
                f"{settings.shard_size!r}"
            )
        return settings

    @property
    def sharded(self) -> bool:
        return bool(self.shard_size)

    @property
    def cluster_key(self) -> tuple:
        return (self.cluster, self.workers, int(self.threads_per_worker), self.memory_limit)

    def describe(self) -> str:
        if self.cluster == NO_CLUSTER:
            return "this process"
        if self.cluster == LOCAL:
            return f"a local Dask cluster ({self.workers or default_workers()} workers)"
        if self.cluster == LOCAL_CUDA:
            return "a local Dask cluster, one worker per GPU (dask-cuda)"
        return f"the Dask scheduler at {self.cluster}"


@dataclass(frozen=True)
class ModelDefinition:
    """How a worker loads a model itself: `load(config)` with its catalog entry's configuration.

    `load` is a module-level function (pickled by reference), so only the configuration travels.
    """

    load: Callable[[Mapping[str, Any]], Any]
    config: Mapping[str, Any]

    @property
    def key(self) -> str:
        where = f"{self.load.__module__}.{self.load.__qualname__}"
        return f"{where}:{json.dumps(self.config, sort_keys=True, default=str)}"


def attach_definition(model: Any, definition: ModelDefinition) -> Any:
    """Record on a loaded model how to load it again (the catalog's datasets call this)."""
    setattr(model, DEFINITION_ATTRIBUTE, definition)
    return model


class ShardFailed(RuntimeError):
    """A shard raised: the stage stops, naming the shard's users and the cause."""


# -- the stage ----------------------------------------------------------------------------------


def run_shards(
    settings: ShardSettings,
    stage: str,
    rows: pd.DataFrame,
    task: Callable[..., Any],
    *,
    data: Mapping[str, Any] | None = None,
    models: Mapping[str, Any] | None = None,
    user_column: str = "user_id",
) -> list[Any]:
    """`task(rows_of_shard, **data, **models)` per shard of users, results in shard order.

    `rows` hold one or more rows per user (`user_column`); `data` is what every shard reads (sent
    once to each worker); `models` are loaded models (on a cluster: their catalog definitions).
    """
    data, models = dict(data or {}), dict(models or {})
    if not settings.sharded or rows.empty:
        return [task(rows, **data, **models)]
    shards = split_users(rows, int(settings.shard_size), user_column)
    definitions = {name: _definition(name, model, settings) for name, model in models.items()}
    keys = _shard_keys(stage, task, shards, data, definitions, settings)
    store = _ShardStore(settings.folder, stage)
    results: dict[int, Any] = {}
    for i, key in enumerate(keys):
        found, value = store.read(key)
        if found:
            results[i] = value
    todo = [i for i in range(len(shards)) if i not in results]
    logger.info(
        "%s: %d %s in %d shards of up to %d on %s; %d reused from %s, %d to compute",
        stage,
        rows[user_column].nunique(),
        "users" if user_column == "user_id" else f"{user_column}s",
        len(shards),
        int(settings.shard_size),
        settings.describe(),
        len(results),
        store.where,
        len(todo),
    )
    start = time.perf_counter()
    if todo:
        run = _run_here if settings.cluster == NO_CLUSTER else _run_on_cluster
        for i, value in run(settings, stage, task, shards, todo, data, models, definitions):
            store.write(keys[i], value)
            results[i] = value
            logger.info(
                "%s: shard %d/%d done (%d of %d computed, %.1f s)",
                stage,
                i + 1,
                len(shards),
                sum(j in results for j in todo),
                len(todo),
                time.perf_counter() - start,
            )
    return [results[i] for i in range(len(shards))]


def concat_tables(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The shards' tables as one, in shard order (one part: as it is)."""
    return parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)


def split_users(rows: pd.DataFrame, shard_size: int, user_column: str = "user_id") -> list:
    """Consecutive shards of `shard_size` users (first-seen order), each with all its users' rows
    in their original order."""
    if user_column not in rows.columns:
        raise KeyError(f"sharding: rows have no {user_column!r} column ({list(rows.columns)})")
    users = list(dict.fromkeys(rows[user_column]))
    shards = []
    for begin in range(0, len(users), shard_size):
        chosen = set(users[begin : begin + shard_size])
        shards.append(rows[rows[user_column].isin(chosen)])
    return shards


def _users_of(shard: pd.DataFrame, user_column: str = "user_id") -> list:
    return list(dict.fromkeys(shard[user_column])) if user_column in shard.columns else []


def _failure(stage: str, i: int, n: int, shard: pd.DataFrame, where: str, error: BaseException):
    users = _users_of(shard)
    return ShardFailed(
        f"{stage}: shard {i + 1}/{n} (users {users}) failed on {where}: "
        f"{type(error).__name__}: {error}"
    )


def _run_here(settings, stage, task, shards, todo, data, models, definitions) -> Iterator:
    for i in todo:
        try:
            with torch_threads(settings.threads_per_worker):
                value = task(shards[i], **data, **models)
        except Exception as error:
            raise _failure(stage, i, len(shards), shards[i], "this process", error) from error
        yield i, value


def _run_on_cluster(settings, stage, task, shards, todo, data, models, definitions) -> Iterator:
    from distributed import as_completed

    client = cluster_client(settings)
    shared = client.scatter([SharedData(data)], broadcast=True, hash=False)[0]
    futures = {
        client.submit(
            _shard_task,
            task,
            shards[i],
            shared,
            definitions,
            int(settings.threads_per_worker),
            key=f"{stage}-shard-{i + 1}-of-{len(shards)}-{time.time_ns()}",
            pure=False,
        ): i
        for i in todo
    }
    try:
        for future in as_completed(futures):
            i = futures[future]
            try:
                value = future.result()
            except Exception as error:
                raise _failure(
                    stage, i, len(shards), shards[i], settings.describe(), error
                ) from error
            yield i, value
    finally:
        client.cancel(list(futures))
        client.cancel([shared])


class SharedData:
    """What every shard of a stage reads, sent to each worker once as one pickle.

    Dask's own serialisation of a dict goes into its values and turns tensors into NumPy arrays,
    which have no bfloat16 (the keyword adapter's LoRA tensors are bfloat16): the stage failed
    with "Could not serialize object of type Tensor". Pickled whole here, any tensor travels as
    torch pickles it; a worker unpickles a stage's data once and keeps only the last stage's."""

    _last: tuple[str, dict[str, Any]] | None = None  # per process (worker)

    def __init__(self, data: Mapping[str, Any]):
        self.key = f"{os.getpid()}-{time.time_ns()}"
        self.blob = pickle.dumps(dict(data), protocol=pickle.HIGHEST_PROTOCOL)

    def value(self) -> dict[str, Any]:
        last = SharedData._last
        if last is None or last[0] != self.key:
            last = SharedData._last = (self.key, pickle.loads(self.blob))
        return last[1]


def _shard_task(task, shard, shared: SharedData, definitions, threads):
    """On a worker: the shard with the stage's data and the worker's models (each loaded once
    per worker)."""
    models = {name: worker_model(definition) for name, definition in definitions.items()}
    with torch_threads(threads):
        return task(shard, **shared.value(), **models)


def _definition(name: str, model: Any, settings: ShardSettings) -> ModelDefinition | None:
    definition = getattr(model, DEFINITION_ATTRIBUTE, None)
    if definition is None and settings.cluster != NO_CLUSTER:
        raise ValueError(
            f"sharding: model {name!r} ({type(model).__name__}) has no catalog definition, so "
            "workers cannot load it; load it through the catalog (its dataset records one)"
        )
    return definition


# -- results kept per shard ------------------------------------------------------------------


def _shard_keys(stage, task, shards, data, definitions, settings) -> list[str]:
    """A name per shard from everything its result depends on."""
    from dask.base import tokenize

    with _deterministic_tokens():
        common = tokenize(
            stage,
            f"{task.__module__}.{task.__qualname__}",
            data,
            {n: d.key if d is not None else None for n, d in definitions.items()},
            int(settings.threads_per_worker),
            int(settings.shard_size),
        )
        return [f"{i:05d}-{tokenize(common, shard)}" for i, shard in enumerate(shards)]


@contextmanager
def _deterministic_tokens():
    """Dask's tokens, the same in every process: images and tensors by their bytes (Dask's own
    token of a tensor differs between processes)."""
    import dask
    import torch
    from dask.base import normalize_token
    from PIL import Image

    @normalize_token.register(Image.Image)
    def _image(image):
        return (image.mode, image.size, image.tobytes())

    @normalize_token.register(torch.Tensor)
    def _tensor(tensor):
        data = tensor.detach().cpu().contiguous()
        return (
            str(data.dtype),
            tuple(data.shape),
            data.reshape(-1).view(torch.uint8).numpy().tobytes(),
        )

    with dask.config.set({"tokenize.ensure-deterministic": True}):
        yield


class _ShardStore:
    """Shard results as pickle files under `<folder>/<stage>/`, written atomically."""

    def __init__(self, folder: str | None, stage: str):
        self.path = None if folder is None else Path(folder) / stage.replace("/", "_")
        self.where = str(self.path) if self.path else "(no shard folder)"

    def read(self, key: str) -> tuple[bool, Any]:
        if self.path is None or not (self.path / f"{key}.pkl").is_file():
            return False, None
        with open(self.path / f"{key}.pkl", "rb") as fh:
            return True, pickle.load(fh)

    def write(self, key: str, value: Any) -> None:
        if self.path is None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        staging = self.path / f".{key}.{os.getpid()}.tmp"
        with open(staging, "wb") as fh:
            pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(staging, self.path / f"{key}.pkl")


# -- clusters and the models their workers hold ------------------------------------------------

_CLIENTS: dict[tuple, Any] = {}
_WORKER_MODELS: dict[str, Any] = {}


def default_workers() -> int:
    """One worker per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def cluster_client(settings: ShardSettings):
    """The run's Dask client for `settings.cluster`, started on first use and kept until
    `close_clusters` (the project's hook calls it when a run ends)."""
    key = settings.cluster_key
    if key in _CLIENTS:
        return _CLIENTS[key][0]
    from distributed import Client

    start = time.perf_counter()
    cluster = None
    if settings.cluster == LOCAL:
        from distributed import LocalCluster

        with worker_environment():
            cluster = LocalCluster(
                n_workers=int(settings.workers or default_workers()),
                threads_per_worker=int(settings.threads_per_worker),
                processes=True,
                memory_limit=settings.memory_limit or "auto",
                dashboard_address=None,
            )
    elif settings.cluster == LOCAL_CUDA:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as error:
            raise ImportError(
                "sharding.cluster: local_cuda needs dask-cuda on a GPU machine "
                "(pip install dask-cuda; docs/dask.md: When one machine is not enough)"
            ) from error
        visible = None if settings.workers is None else ",".join(map(str, range(settings.workers)))
        with worker_environment():
            cluster = LocalCUDACluster(
                CUDA_VISIBLE_DEVICES=visible,
                threads_per_worker=int(settings.threads_per_worker),
                dashboard_address=None,
            )
    client = Client(cluster if cluster is not None else settings.cluster)
    _CLIENTS[key] = (client, cluster)
    logger.info(
        "sharding: %s ready with %d workers in %.1f s",
        settings.describe(),
        len(client.scheduler_info()["workers"]),
        time.perf_counter() - start,
    )
    return client


# Dask's nanny starts each worker with MALLOC_TRIM_THRESHOLD_=65536 (to hand freed memory back to
# the system). Setting any malloc threshold switches off glibc's dynamic mmap threshold, so every
# large temporary buffer is mmapped and unmapped again: a batched bfloat16 matmul of the LLM ran
# 2.7x slower in a worker than in the main process (0.157 s against 0.058 s for 300 matmuls of
# 256x576 by 576x576, one thread), and `make run`'s sharded LLM stages were no faster on two
# workers than in one process. Local workers start without it (None unsets it in Dask's config);
# a remote cluster's workers need the same setting (docs/dask.md: When one machine is not enough).
WORKER_ENVIRONMENT = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


@contextmanager
def worker_environment():
    """Dask configuration for starting the project's local workers (see WORKER_ENVIRONMENT)."""
    import dask

    with dask.config.set(WORKER_ENVIRONMENT):
        yield


def close_clusters() -> None:
    """Release the workers' models and close every client (and the clusters this process
    started): the end of a run."""
    release_models()
    while _CLIENTS:
        _, (client, cluster) = _CLIENTS.popitem()
        if cluster is None:  # someone else's scheduler: its workers stay, without our models
            client.run(release_models)
            client.close()
        else:
            client.close()
            cluster.close()
        logger.info("sharding: cluster closed")


def worker_model(definition: ModelDefinition) -> Any:
    """The model of `definition`, loaded once per process (a worker) and kept."""
    key = definition.key
    if key not in _WORKER_MODELS:
        start = time.perf_counter()
        _WORKER_MODELS[key] = attach_definition(definition.load(definition.config), definition)
        logger.info("worker %d: loaded %s in %.1f s", os.getpid(), key, time.perf_counter() - start)
    return _WORKER_MODELS[key]


def worker_cached(key: str, build: Callable[[], Any]) -> Any:
    """Something built from a worker's models (a model with an adapter merged), once per process."""
    if key not in _WORKER_MODELS:
        _WORKER_MODELS[key] = build()
    return _WORKER_MODELS[key]


def release_models() -> int:
    """Drop the models this process keeps for shards (and the GPU memory they held); returns how
    many were held."""
    held = len(_WORKER_MODELS)
    _WORKER_MODELS.clear()
    SharedData._last = None
    if held:
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
    return held


def has_definition(model: Any) -> bool:
    return getattr(model, DEFINITION_ATTRIBUTE, None) is not None


def model_key(model: Any) -> str:
    """A name for a catalog-loaded model that is the same on every worker: its definition's key."""
    return getattr(model, DEFINITION_ATTRIBUTE).key
