"""The outputs: the pure render of a validated profile into vLLM's argv and environment (`render`), that
argv checked against the target vLLM's own flags (`validate`, the one checked command every format
gets), and the formats built on it: multi-node plans (`deploy`), Compose (`compose`), Kubernetes
(`k8s`), systemd (`systemd`), what differs between two profiles (`diff`), and the one compile cache
root as vLLM's environment (`compile_cache`).

Answers: "what exactly will run, in the format the user deploys with?". Imports the base modules and
the stages below it: engine, model, profile, hardware, fit, preflight.
"""
