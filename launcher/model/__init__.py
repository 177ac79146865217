"""The model: what Qwen3.6-27B-INT8-MTP is (layers, heads, vocabulary, valid tensor-parallel sizes,
checkpoint bytes: `facts`) and what its checkpoint weighs on disk (`weights`: the safetensors index read
without loading a tensor).

Answers: "how big is this model, and how is it shaped?". Imports only the base modules
(launcher.errors, .defaults, .style, .verdict) and the stage below it: engine.
"""
