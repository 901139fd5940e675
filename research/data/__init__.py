"""Data: built-in corpora, local and hub text, tokenizers, packed batches."""
