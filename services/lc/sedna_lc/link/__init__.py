"""The LocalController's reliable link to the GM hub (``sedna.api.gm.v1.HubService``)."""

from sedna_lc.link.backoff import Backoff
from sedna_lc.link.client import GMLink, LinkConfig, LinkProtocolError
from sedna_lc.link.stream import GrpcLinkStream, LinkStream

__all__ = ["Backoff", "GMLink", "GrpcLinkStream", "LinkConfig", "LinkProtocolError", "LinkStream"]
