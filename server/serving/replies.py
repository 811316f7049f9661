"""What a reply may weigh: the server's send limit, told to the caller before work is wasted."""

from __future__ import annotations

from bertserve.errors import InvalidRequest

__all__ = ["check_reply_size"]


def check_reply_size(size: int, limit: int, inputs: int, or_else: str = "") -> None:
    """Refuse a call whose reply would not fit the send limit, with how many inputs would; before
    the model runs where the size is known by then."""
    if size > limit:
        over = f"the reply would hold about {size} bytes, over the server's limit of {limit} bytes per reply"
        fit = inputs * limit // size
        if fit < 1:  # an input's reply is too large by itself: fewer inputs would not help
            shorter = "a shorter input" if inputs <= 1 else "shorter inputs"
            raise InvalidRequest(f"{over} (max_send_message_bytes); send {shorter}{or_else}")
        raise InvalidRequest(f"{over} (max_send_message_bytes); send at most {fit} inputs per call{or_else}")
