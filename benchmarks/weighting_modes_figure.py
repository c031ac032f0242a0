"""The same users under both weighting modes (embedding_scale, composed_guidance) across the
weight grid, from a finished base run's catalog (docs/figures/weighting_modes.png, remade by
`make docs-figures`).

    .venv/bin/python benchmarks/weighting_modes_figure.py [--scene emoticon] [--users 2]
        [--out docs/figures/weighting_modes.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from pmg_kedro.components.method.pmg import FULL, PMG, PMGSettings
from pmg_kedro.components.reporting.figures import subplots

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="emoticon")
    parser.add_argument("--users", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "docs/figures/weighting_modes.png"))
    args = parser.parse_args()
    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
    scene = args.scene
    requests = catalog.load(f"{scene}.generation_requests").head(args.users)
    soft = catalog.load(f"{scene}.soft_embeddings")
    generator = catalog.load("generator")
    settings = params[scene]["weighted_generation"]
    modes = ("embedding_scale", "composed_guidance")
    method = PMGSettings.from_params(settings)
    results = {
        mode: PMG(generator, settings=method.replace(mode=mode)).generate(
            requests, FULL, soft["tensors"]
        )
        for mode in modes
    }
    n_pairs = len(settings["weight_ratios"])
    rows = [(mode, user) for user in requests["user_id"] for mode in modes]
    fig, axes = subplots(len(rows), n_pairs, size=(1.5 * n_pairs, 1.7 * len(rows)))
    for r, (mode, user) in enumerate(rows):
        table, images = results[mode]
        mine = table[table["user_id"] == user].reset_index(drop=True)
        for c, row in mine.iterrows():
            ax = axes[r][c]
            ax.imshow(images[row["image_key"]])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{row['w_p']:g}:{row['w_t']:g}", fontsize=7)
        axes[r][0].set_ylabel(f"{str(user)[:8]}\n{mode}", fontsize=6)
    fig.suptitle(
        f"{scene}: w_p:w_t sweep per weighting mode (embedded generator, seed "
        f"{settings['seeds'][0]}, {settings['steps']} steps, guidance {settings['guidance_scale']})",
        fontsize=8,
    )
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
