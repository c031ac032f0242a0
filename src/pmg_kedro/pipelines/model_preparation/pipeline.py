"""`model_preparation`: icon corpus -> tiny scorer, tiny generator -> curves, grids, report;
train users' behavior -> the keyword adapter of LLM_g (tag `keyword_adapter`, issue 12).

Not in `__default__` (see pipeline_registry): the committed weights in `models/embedded/` are
retrained only by `kedro run --pipeline model_preparation --env reference` (the adapter alone:
add `--tags keyword_adapter`). In `base` the training nodes keep the committed weights and the
checks measure them; in `paper` and `paper_random*` the first nodes stop the run with a message
(`model_preparation.enabled: false`): those environments' models come from local folders or
random initialisation and LLM_g stays zero-shot, with nothing to train or measure here.
"""

from kedro.pipeline import Node, Pipeline

from .keyword_adapter import keyword_adapter_pipeline
from .nodes import (
    build_corpus,
    check_generator,
    check_scorer,
    plot_training_curves,
    render_sample_grids,
    summarize_preparation,
    train_tiny_generator,
    train_tiny_scorer,
)


def create_pipeline(**kwargs) -> Pipeline:
    params = "params:model_preparation"
    return (
        Pipeline(
            [
                Node(
                    build_corpus,
                    [params],
                    ["icon_corpus", "icon_corpus_counts"],
                    name="build_icon_corpus",
                ),
                Node(
                    train_tiny_scorer,
                    ["icon_corpus", params],
                    ["embedded_scorer", "scorer_training_history"],
                    name="train_tiny_scorer",
                ),
                Node(
                    train_tiny_generator,
                    ["icon_corpus", params],
                    ["embedded_generator", "generator_training_history"],
                    name="train_tiny_generator",
                ),
                Node(
                    plot_training_curves,
                    ["generator_training_history", "scorer_training_history"],
                    "model_preparation_loss_curves",
                    name="plot_training_curves",
                ),
                Node(
                    render_sample_grids,
                    ["embedded_generator", "icon_corpus", params],
                    "model_preparation_sample_grids",
                    name="render_sample_grids",
                ),
                Node(
                    check_scorer,
                    ["embedded_scorer", "icon_corpus", params],
                    "scorer_check",
                    name="check_scorer",
                ),
                Node(
                    check_generator,
                    ["embedded_generator", params],
                    "generator_check",
                    name="check_generator",
                ),
                Node(
                    summarize_preparation,
                    [
                        "icon_corpus_counts",
                        "scorer_training_history",
                        "generator_training_history",
                        "scorer_check",
                        "generator_check",
                        params,
                    ],
                    "model_preparation_report",
                    name="summarize_preparation",
                ),
            ]
        )
        + keyword_adapter_pipeline()
    )
