"""Kedro-Viz: stage tags and readable node names in the registry, previews of the project's own
datasets, and a real `kedro viz run` on 127.0.0.1 that lists every registered pipeline."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from kedro.io import DataCatalog, Version
from PIL import Image

from pmg_kedro.datasets.image_folder import ImageFolderDataset
from pmg_kedro.datasets.tensors import TensorsDataset

VIZ_START_TIMEOUT_S = 240  # importing the pipelines (torch, diffusers, ...) on a busy 2-core CPU
SAVE_VERSION = "2026-01-01T00.00.00.000Z"


@pytest.fixture(scope="module")
def registered(project_root):
    """The project's registered pipelines, as `kedro` and Kedro-Viz see them."""
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project_root)
    return {name: pipelines[name] for name in pipelines}


def test_every_node_carries_the_tag_of_its_stage(registered):
    stages = set(registered) - {"__default__"}
    for stage in stages:
        for node in registered[stage].nodes:
            assert stage in node.tags, f"{node.name} of pipeline {stage} lacks the tag {stage!r}"
    for node in registered["__default__"].nodes:
        node_stages = node.tags & stages
        assert node_stages, f"{node.name} has no stage tag"
        for stage in node_stages:  # a tag only where the stage's pipeline has the node
            assert node.name in {n.name for n in registered[stage].nodes}, (node.name, stage)


def test_every_node_has_a_readable_name(registered):
    # An unnamed Kedro node is called after its signature, "func([in]) -> [out]".
    for node in {n for pipeline in registered.values() for n in pipeline.nodes}:
        assert re.fullmatch(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)*", node.name), node.name


def test_catalog_layers_have_an_order(registered, test_catalog):
    """Kedro-Viz draws the layers only when every layer comes after the layers it is made from
    (a cycle turns the layer view off): no dataset is made, through any nodes, from a dataset of
    a later layer."""
    from collections import defaultdict
    from graphlib import TopologicalSorter

    catalog = test_catalog()
    made_from = defaultdict(set)  # dataset -> the datasets its nodes read
    pipeline = registered["__default__"] + registered["model_preparation"]
    # A node's outputs are made from its inputs; so are a namespace's (Kedro-Viz draws each
    # namespace, `movie` or `movie.pmg`, as one node too).
    namespaces = {
        n.namespace.rsplit(".", k)[0] for n in pipeline.nodes if n.namespace for k in (0, 1)
    }
    parts = [(n.inputs, n.outputs) for n in pipeline.nodes]
    for namespace in namespaces:
        inner = pipeline.only_nodes_with_namespaces([namespace])
        parts.append((inner.inputs(), inner.outputs()))
    for inputs, outputs in parts:
        for output in outputs:
            made_from[output] |= {i for i in inputs if not i.startswith("params:")}

    def layer(name: str) -> str | None:
        metadata = getattr(catalog.get(name), "metadata", None) or {}
        return (metadata.get("kedro-viz") or {}).get("layer")

    sources: dict[str, set[str]] = {}

    def upstream_layers(name: str) -> set[str]:
        if name not in sources:
            sources[name] = set()
            for parent in made_from.get(name, ()):
                sources[name] |= {layer(parent)} | upstream_layers(parent)
            sources[name].discard(None)
        return sources[name]

    order = {layer(d): set() for d in made_from if layer(d)}
    for dataset in list(made_from):
        if layer(dataset):
            order[layer(dataset)] |= upstream_layers(dataset) - {layer(dataset)}
    assert list(TopologicalSorter(order).static_order())  # CycleError names the cycle


def _solid(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (5, 7), colour)


def test_image_folder_preview_is_a_grid_of_the_first_images(tmp_path):
    colours = {"u2/s0": (0, 0, 255), "u1/s1": (0, 255, 0), "u1/s0": (255, 0, 0)}
    path = str(tmp_path / "chosen_images")
    ImageFolderDataset(path, version=Version(None, SAVE_VERSION)).save(
        {key: _solid(c) for key, c in colours.items()}
    )
    preview = ImageFolderDataset(path, version=Version(None, None)).preview(n_images=2, size=8)
    grid = np.asarray(Image.open(io.BytesIO(base64.b64decode(preview))).convert("RGB"))
    # 2 tiles -> 2 per row (ceil(sqrt(2))), 8 px each with 2 px padding around and between.
    assert grid.shape == (2 + 8 + 2, 2 + 8 + 2 + 8 + 2, 3)
    tile_centres = [grid[6, 6], grid[6, 2 + 8 + 2 + 4]]
    first_two_keys = sorted(colours)[:2]  # u1/s0 (red), u1/s1 (green)
    for centre, key in zip(tile_centres, first_two_keys, strict=True):
        np.testing.assert_array_equal(centre, colours[key])
    assert not (grid == colours["u2/s0"]).all(axis=-1).any(), "a third image leaked into the grid"


def test_tensors_preview_lists_shapes_from_the_header(tmp_path):
    path = str(tmp_path / "soft_embeddings.safetensors")
    tensors = {
        "u2": torch.zeros(4, 384),
        "u1": torch.ones(2, 3, dtype=torch.int64),
        "u3": torch.ones(1),
    }
    TensorsDataset(path, version=Version(None, SAVE_VERSION)).save({"tensors": tensors})
    preview = TensorsDataset(path, version=Version(None, None)).preview(nrows=2)
    assert preview["columns"] == ["tensor", "shape", "dtype", "numel"]
    assert preview["data"] == [
        ["u1", "2x3", "I64", 6],
        ["u2", "4x384", "F32", 4 * 384],
        ["... 1 more tensors", "", "", None],
    ]
    assert preview["index"] == [0, 1, 2]


def test_catalog_metadata_reaches_the_project_datasets(tmp_path):
    viz = {"kedro-viz": {"layer": "model_output", "preview_args": {"n_images": 4}}}
    catalog = DataCatalog.from_config(
        {
            "images": {
                "type": "pmg_kedro.datasets.image_folder.ImageFolderDataset",
                "filepath": str(tmp_path / "images"),
                "metadata": viz,
            },
            "tensors": {
                "type": "pmg_kedro.datasets.tensors.TensorsDataset",
                "filepath": str(tmp_path / "t.safetensors"),
                "metadata": viz,
            },
        }
    )
    assert catalog.get("images").metadata == viz
    assert catalog.get("tensors").metadata == viz


def _free_loopback_port() -> int:
    """A free loopback port below 49151: Kedro-Viz refuses the ephemeral range above it."""
    rng = np.random.default_rng()
    for port in rng.integers(20000, 49000, size=50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", int(port)))
            except OSError:
                continue
            return int(port)
    raise RuntimeError("no free loopback port in 20000-49000")


def _get_json(opener, url: str):
    with opener.open(url, timeout=30) as response:
        return json.load(response)


def _layers(catalog, dataset_names) -> set[str]:
    """The Kedro-Viz layers the catalog gives these datasets (metadata: {kedro-viz: {layer}})."""
    layers = set()
    for name in dataset_names:
        metadata = getattr(catalog.get(name), "metadata", None) or {}
        if "layer" in metadata.get("kedro-viz", {}):
            layers.add(metadata["kedro-viz"]["layer"])
    return layers


def test_viz_server_lists_every_registered_pipeline(
    registered, test_catalog, project_root, tmp_path
):
    port = _free_loopback_port()
    base = f"http://127.0.0.1:{port}/api"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy
    log = (tmp_path / "viz.log").open("w")
    command = [sys.executable, "-m", "kedro", "viz", "run", "--env", "test", "--no-browser"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        command,
        cwd=project_root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the server's workers stop with it
    )
    try:
        deadline = time.monotonic() + VIZ_START_TIMEOUT_S
        main = None
        while main is None:
            if server.poll() is not None:
                pytest.fail(
                    f"kedro viz exited with {server.returncode}:\n{_tail(tmp_path / 'viz.log')}"
                )
            if time.monotonic() > deadline:
                pytest.fail(
                    f"kedro viz not up in {VIZ_START_TIMEOUT_S} s:\n{_tail(tmp_path / 'viz.log')}"
                )
            try:
                main = _get_json(opener, f"{base}/main")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1.0)

        assert {p["id"] for p in main["pipelines"]} == set(registered)
        catalog = test_catalog()
        for name, pipeline in registered.items():
            graph = _get_json(opener, f"{base}/pipelines/{name}")
            tasks = {n["full_name"]: set(n["tags"]) for n in graph["nodes"] if n["type"] == "task"}
            assert tasks == {n.name: n.tags for n in pipeline.nodes}, name
            # every dataset node sits in the layer its catalog entry names, and the layers form
            # an order (Kedro-Viz shows none when the layer graph has a cycle)
            for node in graph["nodes"]:
                if node["type"] == "data" and not node["name"].startswith("params:"):
                    assert {node["layer"]} - {None} == _layers(catalog, [node["name"]]), node
            assert set(graph["layers"]) >= _layers(catalog, pipeline.datasets()), name
    finally:
        _stop_group(server)
        log.close()


def _stop_group(server: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL after 20 s; nothing left is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def _tail(path, n: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
