"""The preflight: every check of a profile against an inventory (`checks`, pure), the preflight of one
named profile with its adjustments and combined fix (`run`), `--profile auto` and the near miss when
nothing runs (`choice`), the model files and disk (`model_files`) and the TP8 scale-out advice
(`scale_out`).

Answers: "can this profile run on these GPUs, and if not, what would make it?". Imports the base
modules and the stages below it: engine, model, profile, hardware, fit.
"""
