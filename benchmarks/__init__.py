"""Side-by-side speed benchmark: course_lib's jitted train steps against PyTorch eager.

Run ``python -m benchmarks`` (or ``make bench``; needs ``pip install -e '.[bench]'`` for the
CPU build of PyTorch). See ``benchmarks/run.py`` for what is measured and ``results.md`` for
the latest table, quoted in the practice chapters (5.2) and the tools chapter (7).
"""
