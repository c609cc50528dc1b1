"""Offline evaluation on MovieLens-100k: do the interest vectors recommend better than baselines?

``python -m bench.eval`` (see bench/README.md, "Offline evaluation"). Modules:

- :mod:`bench.movielens` — the data (RecBole wheel from PyPI, cached outside the repo), items,
  events, per-user time splits;
- :mod:`bench.eval.config` — the tuned knobs (:class:`~bench.eval.config.EvalParams`), the library
  defaults and the chosen ones;
- :mod:`bench.eval.world` / :mod:`bench.eval.fast` — items and users into embedded Qdrant through
  the embed worker's ``JobFolder``;
- :mod:`bench.eval.pipeline` — the same through Kafka, the stream and the embed workers;
- :mod:`bench.eval.engine` — recommend requests (planned by ``models.recommend``) answered in
  numpy as the store answers them, checked against the real ``Recommender`` on embedded Qdrant;
- :mod:`bench.eval.methods` / :mod:`bench.eval.metrics` — the compared methods, Recall/NDCG@K,
  paired bootstrap intervals;
- :mod:`bench.eval.baselines` — the classical anchors, item-kNN and EASE (λ chosen on the
  validation split);
- :mod:`bench.eval.cold` — the cold-item split: a tenth of the catalog held out of training;
- :mod:`bench.eval.tune` — coordinate descent on the validation split.
"""
