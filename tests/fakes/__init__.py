"""Fakes, each named as one: servers for protocols whose real server cannot be installed here or
cannot show an exactly known timing (fake_redis, fake_openai, fake_ollama, fake_qdrant,
fake_minio, fake_minio_metrics, nvml), and the in-memory client kind for engine unit tests (memory_client)."""
