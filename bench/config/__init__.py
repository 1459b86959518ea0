"""The ablation file: schema (pydantic, strict), YAML loading, grids, expansion into runs."""
