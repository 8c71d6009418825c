"""The local runtime: ``ondeck run`` (a ModelDeployment with processes instead of pods) and ``ondeck demo``.

manifest.py    a manifest as a local run needs it (admission by ondeck.spec, file:// packages)
processes.py   the `ondeck serve` / `ondeck route` children: start, readiness, stop
scraping.py    /metrics scrapes -> counter totals -> windows for ondeck.decide
analysis.py    a canary step's analysis templates, run by ondeck.decide.CanaryAnalysis
routing.py     the router's config file, and its reload
controller.py  the loop: rollout (ondeck.rollout), drift and quality (ondeck.monitor), state
state.py       the state directory: state.json, commands, series, logs
view.py        the live table and `ondeck status`
traffic.py     generated traffic with feedback labels (demo, tests)
receiver.py    a local retrain-webhook receiver (demo, tests)
demo.py        the three scenarios of `ondeck demo`; plots.py draws them
"""
