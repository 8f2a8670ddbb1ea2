"""``nerft predict``, the stage: texts or corpora in, entities with character offsets and scores out.

``cli`` (the command) -> ``ray_engine`` (the same over a Ray cluster, sharded) -> ``files`` (resumable corpus
prediction) and ``writers`` (Label Studio, doccano). The predictors themselves are the inference library,
``nerft.inference``.
"""
