"""The live server: exec of vLLM (`exec`), supervising it (`supervise`), waiting until it serves
(`readiness`), the post-start battery (`smoke`), benchmarks and their charts (`bench`, `bench_chart`),
multi-node ranks (`cluster`), the live GPUs and installed vLLM at serve time (`runtime`, `installed`).

Answers: "is it up, does it answer right, and how fast?". Imports the base modules and every stage
below it (engine to output); only the commands import it.
"""
