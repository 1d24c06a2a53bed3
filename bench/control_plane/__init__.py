"""GlobalManager control-plane benchmark: one ``sedna-gm``, many simulated LocalControllers.

Run ``python -m bench.control_plane --help``; results and method are in ``bench/README.md``.
"""
