"""The GPUs: NVML read once into a frozen snapshot (`gpu`, the only code that touches NVML), the inventory
format that snapshot is saved and loaded as (`inventory`), and the catalogue of GPU models for
machines launcher cannot see (`catalog`: memory, bandwidth, compute capability per model name).

Answers: "what GPUs are there, and what are they like?". Imports the base modules and the stages below
it: engine, model, profile.
"""
