"""``python -m bench.eval.embed_worker``: the embed worker with the evaluation's interest spec.

``interest-stream embed`` builds :class:`~streams.embed_worker.EmbedWorker` with the library's
default :class:`~models.profile.InterestSpec` and exposes no setting for half-lives, K or the
cluster threshold. When the evaluation runs with parameters whose spec differs from the library's,
the pipeline mode starts this instead: the same ``EmbedWorker`` and settings as the CLI, built
with the spec from ``INTEREST_EVAL_PARAMS`` (an :class:`~bench.eval.config.EvalParams` as JSON).
With the library's spec the pipeline runs ``python -m streams.cli embed`` itself.
"""

from __future__ import annotations

import json
import logging
import os

from bench.eval.config import EvalParams
from models.settings import ModelSettings, QdrantSettings
from streams.embed_worker import EmbedWorker
from streams.settings import ApiSettings, EmbedSettings, KafkaSettings, TopicSettings

PARAMS_ENV = "INTEREST_EVAL_PARAMS"


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("INTEREST_LOG_LEVEL", "warning").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    params = EvalParams.from_dict(json.loads(os.environ[PARAMS_ENV]))
    worker = EmbedWorker(
        KafkaSettings(), TopicSettings(), EmbedSettings(), ModelSettings(), QdrantSettings(),
        spec=params.spec(), api=ApiSettings(),
    )  # fmt: skip
    worker.run()


if __name__ == "__main__":
    main()
