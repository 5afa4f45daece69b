"""Scene and real-experiment files: the schema (the only home of defaults), YAML loading,
`--set` overrides, and the resolve step that turns data-dependent defaults into settings."""
