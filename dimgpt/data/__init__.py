"""Text side: cleaning, tokenizer, sources, token store, instruction formatting, loaders."""
