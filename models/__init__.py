"""Models: catalog of GGUF files, chat templates, the llama.cpp engine. No Qt, no torch."""
