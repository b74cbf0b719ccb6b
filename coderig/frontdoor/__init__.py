"""The front door: LiteLLM's config (`litellm`), the nginx gateway (`nginx`), the one assembly of a route
and gateway spec for every target (`assemble`), the gateway's routes (`nginx_routes`) and the local runner
(`run`). Pure but for `run`."""

from coderig.frontdoor.litellm import *  # noqa: F403
from coderig.frontdoor.nginx import *  # noqa: F403
from coderig.frontdoor.nginx_routes import *  # noqa: F403
