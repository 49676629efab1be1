// Placeholder: the tokenizer lands here.
