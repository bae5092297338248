"""``python -m bench``: every benchmark, one after the other, figures and ratios printed."""

from bench import cold_start, submit_rate

cold_start.main()
submit_rate.main()
