"""The LLM family's clients: the OpenAI-compatible API (openai: llama.cpp, vLLM, any
OpenAI-compatible server), Ollama's native API (ollama), the embeddings API (embeddings), and
what they share: prompts and workloads (prompts, shapes, trace) and HTTP and streaming
(http, stream)."""
