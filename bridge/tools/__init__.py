"""Operator tools behind ``workflows-bridge`` sub-commands, each imported only when chosen: they
use the service's modules; the service never imports them."""
