"""Builders for the offline demo: a generated Chinese NER corpus and a character-level ChatML tokenizer."""
