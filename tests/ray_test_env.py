"""Settings for the Ray clusters the tests start (in pytest's processes, in scenario
subprocesses, `ray start` heads: tests/conftest.py puts them in the environment they inherit).

They poll less while idle: Serve's controller every 0.5 s instead of 0.1 s (a replica's death or
a deploy is seen up to 0.4 s later), the node agent's dashboard stats every 60 s instead of 5,
Serve's metrics every 5 s instead of 0.1. What an idle cluster burns is taken from the other test
worker: 0.105 instead of 0.152 of a core for a local Ray with the LLM app deployed
(benchmarks/ray_idle_cpu.py, which measures these settings against Ray's defaults; medians of 2
alternating runs of 60 s each: benchmarks/results/ray_idle_cpu.json). Nothing tested reads those
stats or metrics.
"""

RAY_IDLE_SETTINGS = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
                     "REPORTER_UPDATE_INTERVAL_MS": "60000",
                     "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "5000"}
