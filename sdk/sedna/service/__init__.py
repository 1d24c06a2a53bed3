"""Worker-side service clients (upstream ``sedna.service``).

* :mod:`sedna.service.client`: :class:`~sedna.service.client.LCClient` and
  :class:`~sedna.service.client.LCReporter`, the worker → LocalController report API.
"""
