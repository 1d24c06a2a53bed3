"""Federated-learning round benchmark: ``sedna-aggregator`` vs Flower vs upstream-style
websocket + JSON vs a raw-socket floor, with K real client processes on loopback.

Run ``python -m bench.federated_learning --help``; results and method are in
``bench/README.md``.
"""
