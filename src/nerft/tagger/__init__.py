"""The LLM as a tagger (``task: tag``): one forward pass over a text, a tag per character, no answer generated.

``scheme`` (tags, valid transitions, tags <-> spans; pure), ``positions`` (text -> token ids and each character's
position), ``crf`` (Viterbi, log-partition, marginals over valid sequences), ``model`` (``TaggerSettings``,
``TaggerModel``: the base LLM's body + ``TagHead``; ``build_tagger``). Training encodes documents with
``train.tagging``; prediction runs through ``inference.tagger_backend``.
"""
