"""The memory estimate: vLLM's GPU-memory budget for this model term by term (`estimate`, pure numbers in
and out), the same for a profile on given GPUs (`fit_profile`), and the estimate judged against a real
vLLM start log (`calibrate`).

Answers: "will it start, and how much KV cache will it have?". Imports the base modules and the
stages below it: engine, model, profile, hardware.
"""
