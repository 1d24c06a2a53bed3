"""Adapters of the round core's ports: Redis checkpoints and S3 weight objects.

Imported by module (``sedna_aggregator.adapters.redis_store``,
``sedna_aggregator.adapters.s3_objects``) so that a server without Redis or S3 configured
never imports their clients.
"""
