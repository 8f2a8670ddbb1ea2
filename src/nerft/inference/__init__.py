"""The inference library: one ``Predictor`` contract over several backends, used by every stage that turns texts
into entities (``predict``, ``serve``, ``evaluate --score-with``, ``tune``, ``export``, and ``train``'s dev
evaluation).

Modules, each importing only those above it in this list (and the shared modules under ``nerft``):
``options`` (load and decoding options) <- ``base`` (the ``Predictor`` protocol, its ``Prediction`` result, the
``DecodingPlan`` every backend shares) <- ``location`` (where a model's weights, adapter, tokenizer, labels and
prompt are; nothing loaded) <- ``transformers_backend``, ``vllm_backend``, ``openai_backend``,
``llamacpp_backend``, ``ct2_backend`` (each built from a location and its tokenizer), ``crf_backend`` (a folder
``nerft distill`` wrote) and ``tagger_backend`` (a ``task: tag`` run) <- ``loading`` (the one factory:
``open_predictor``, ``load_predictor``; the folder's ``kind`` chooses the CRF and the tagger, ``--backend`` the
others).

Import what you need from its module, e.g. ``from nerft.inference.loading import load_predictor``; this package
re-exports nothing, so that reading options never imports torch.
"""
