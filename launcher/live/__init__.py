"""The live server: exec of vLLM (`exec`), supervising it (`supervise`), waiting until it serves
(`readiness`), warming it up before it is called ready (`warmup`), its time to ready by stage from vLLM's
log (`stages`), whether the compile cache is warm (`cache_state`), the post-start battery (`smoke`),
benchmarks and their charts (`bench`, `bench_chart`),
multi-node ranks (`cluster`), the live GPUs and installed vLLM at serve time (`runtime`, `installed`).

Answers: "is it up, does it answer right, and how fast?". Imports the base modules and every stage
below it (engine to output); only the commands import it.
"""
