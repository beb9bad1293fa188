"""YAML text to Python values: the one safe loader aifb reads YAML files with.

libyaml's parser (PyYAML's CSafeLoader) gives the same values as the pure-Python SafeLoader (the
constructor is the same Python code) about 15x faster: the 17 JSON Schemas under
workflow/schemas/, which every Snakemake invocation parses (the targets check at parse time),
took 0.40 s with SafeLoader and 0.027 s with CSafeLoader on the reference machine
(benchmarks/dryrun_1000.py prints the workflow's parse cost). SafeLoader stands in where PyYAML
was built without libyaml. Recipes keep the pure-Python loader (aifb.workflow.recipe): a few
hundred bytes each, and its messages for a malformed file say more ("expected ',' or '}', but
got '<stream end>'" against libyaml's "did not find expected ',' or '}'"). Base layer: imports
nothing of aifb but paths.
"""

from __future__ import annotations

import functools

import yaml

from aifb.paths import schema_dir

SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load(text):
    """One YAML document (a str or an open file) as Python values; yaml.YAMLError when malformed."""
    return yaml.load(text, Loader=SafeLoader)


@functools.cache
def schema_document(name: str):
    """workflow/schemas/<name>, parsed once per process: aifb.kinds reads the workload schemas'
    `x-aifb-kind` blocks and aifb.schemas the whole schemas from the same parse. Shared, so
    read-only: copy it before changing it."""
    with open(schema_dir() / name, encoding="utf-8") as fh:
        return load(fh)
