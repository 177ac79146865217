"""The commands: the thin click layer over the stages (one module per command family). Options in, stage
calls in order, printing and the exit code out; no rule or fact lives here. Imports every stage; only
launcher.cli imports it (lazily, one command at a time)."""
