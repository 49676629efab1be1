// Placeholder: the GGUF reader lands here.
