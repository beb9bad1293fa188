"""What a pipeline recipe's stages mean, without running them: the ops and the kinds that serve
them, the corpus's defaults, the checks of the stages' references (aifb.workflow.recipe
validates with them at parse time) and each stage's workload for its kind's client
(aifb.clients.pipeline runs the stages). Pure data and checks: no I/O, cheap to import, so
Snakemake's parse and `aifb` start-up do not pay for the client's imports (asyncio, numpy)."""

from __future__ import annotations

# op -> (kinds that serve it, the ops its input may come from; None: no input)
OPS = {
    "embed": (("llamacpp", "vllm"), (None,)),
    "query": (("chroma",), (None, "embed")),
    "mget": (("redis",), ("query",)),
    "chat": (("llamacpp", "vllm"), ("mget", None)),
}
CORPUS_DEFAULTS = {"documents": 1000, "dimension": 64, "words": 40, "queries": 200, "seed": 42,
                   "key_prefix": "aifb:doc:", "collection": "aifb_rag"}
DEFAULT_K = 4


def corpus(workload: dict) -> dict:
    return {**CORPUS_DEFAULTS, **(workload.get("corpus") or {})}


def stage_problems(workload: dict, services: dict) -> list[str]:
    """What is wrong with the stages' references: an unknown service, a kind that cannot do the
    op, an input that is not an earlier stage (or not one the op takes), a repeated name."""
    out, seen = [], {}
    for i, st in enumerate(workload.get("stages") or []):
        where = f"workload.stages[{i}] ({st.get('name')})"
        name, svc, op = st.get("name"), st.get("service"), st.get("op")
        if name in seen:
            out.append(f"{where}: the name {name!r} is already stage {seen[name]}")
        if svc not in services:
            out.append(f"{where}: service {svc!r} is not under services: "
                       f"({', '.join(sorted(services)) or 'none'})")
        elif op in OPS and services[svc].get("kind") not in OPS[op][0]:
            out.append(f"{where}: op {op} needs a service of kind {' or '.join(OPS[op][0])}; "
                       f"{svc!r} is {services[svc].get('kind')}")
        src = st.get("input")
        later = [s.get("name") for s in workload["stages"][i:]]
        if src is not None and src not in seen:
            out.append(f"{where}: input {src!r} is " + (
                "this stage or a later one: a stage takes the output of an earlier stage"
                if src in later else "not a stage of this pipeline"))
        elif op in OPS and (src and seen_ops(workload, src)) not in OPS[op][1]:
            takes = " or ".join("no input" if x is None else f"a {x} stage" for x in OPS[op][1])
            out.append(f"{where}: op {op} takes {takes}, not "
                       + ("no input" if src is None else f"the {seen_ops(workload, src)} stage {src!r}"))
        seen[name] = i
    return out


def seen_ops(workload: dict, name: str) -> str | None:
    return next((s.get("op") for s in workload["stages"] if s.get("name") == name), None)


def stage_workload(stage: dict, workload: dict) -> dict:
    """The workload of the stage's kind client: the corpus's shape, then the stage's own
    `workload:` fields (validated against the kind's schema by aifb.workflow.recipe)."""
    c = corpus(workload)
    own = stage.get("workload") or {}
    if stage["op"] == "query":
        base = {"collection": c["collection"], "vectors": c["documents"],
                "dimension": c["dimension"], "queries": c["queries"], "seed": c["seed"],
                "k": int(stage.get("k", DEFAULT_K)), "ops": {"query": 1.0},
                "index": {"space": "cosine"}}
    elif stage["op"] == "embed":
        base = {"api": "openai-embeddings"}
    elif stage["op"] == "mget":
        base = {"ops": {"get": 1.0}, "keyspace": c["documents"], "key_prefix": c["key_prefix"],
                "preload": False}
    else:
        base = {"api": "openai-chat", "ignore_eos": True,
                "prompts": {"source": "synthetic", "input_tokens": 64, "output_tokens": 32}}
    return {**base, **own}
