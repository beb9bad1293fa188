"""The vector-search clients: chroma and qdrant (one module each), and what they share
(aifb.clients.vector.common: the workload, the data set and its exact top-k, recall, and the
HTTP client both run under load)."""
