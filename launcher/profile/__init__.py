"""The profile: the pydantic schema of a profile file (`schema`), loading and layering it (YAML, `extends`,
environment, `--set`, extra vLLM args lifted into profile keys: `load`), where each value came from
(`explain`), and the shape of a deployment (`topology`: TP x PP x DP over nodes).

Answers: "what did the user ask for, exactly, and is it well-formed?". Imports the base modules and
the stages below it: engine, model.
"""
