"""Worker-side service clients (upstream ``sedna.service``).

* :mod:`sedna.service.client`: :class:`~sedna.service.client.LCClient` and
  :class:`~sedna.service.client.LCReporter`, the worker → LocalController report API.
* :mod:`sedna.service.oip_client`: :class:`~sedna.service.oip_client.InferenceClient`, a
  synchronous Open Inference Protocol (KServe v2) gRPC client (the joint-inference edge
  calls the cloud big model with it), and its errors
  :class:`~sedna.service.oip_client.CloudUnavailableError` and
  :class:`~sedna.service.oip_client.CloudInferenceError`.
"""
