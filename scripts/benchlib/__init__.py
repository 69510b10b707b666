"""The benchmarks' code: workloads, load drivers, the systems they drive (this server and its
peers), the figures they take and the reports they print.

The scripts in scripts/ are its entry points: each parses its arguments and calls into one module
here. Running ``python scripts/X.py`` puts scripts/ first on sys.path, so ``import benchlib``
works there with no path edits; ``server`` comes from the installed project (or, where it is not
installed, from the repository root on PYTHONPATH, as scripts/gpu_check.sh sets it). No module
here imports an entry point (tests/test_bench_package.py checks it).
"""
