"""Worker-side servers (upstream ``sedna.service.server``).

* :class:`~sedna.service.server.aggregation.AggregationServerV2`: the MistNet aggregation
  worker (cloud side of split learning), native instead of upstream's Plato server.
"""

from sedna.service.server.aggregation import AggregationServerV2

__all__ = ["AggregationServerV2"]
