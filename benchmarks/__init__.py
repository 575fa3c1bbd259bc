"""Parts of bench.py: the load client, the statistics and the server launcher.

bench.py at the repository root is the command; these modules keep it short and
let the tests import each part on its own.
"""
