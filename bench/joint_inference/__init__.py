"""Joint-inference offload benchmark: our OIP v2 gRPC path vs HTTP+JSON vs the gRPC floor.

Run ``python -m bench.joint_inference --help``; results and method are in ``bench/README.md``.
"""
