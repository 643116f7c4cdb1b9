"""Deprecated: what a CAS module does to a layer's channels now lives in :mod:`cas_edu.activations`.

Kept for one release so that ``cas_edu.channels.channel_data`` and friends keep working; import them from
:mod:`cas_edu.activations` instead.
"""
from __future__ import annotations

# deprecated alias (moved to cas_edu.activations), kept for one release
from .activations import (SUPPRESS_FRACTION, ChannelData, cas_layer, channel_data, masked_channel_activations,
                          suppressed_channels)

__all__ = ["ChannelData", "SUPPRESS_FRACTION", "cas_layer", "channel_data", "masked_channel_activations",
           "suppressed_channels"]
