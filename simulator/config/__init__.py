"""Scene and real-experiment files: the schema (`scene`, `real`: the only home of defaults), YAML
loading and `--set` overrides (`loading`), validation messages (`messages`), and the resolve step
that turns data-dependent defaults into settings (`resolve`)."""
