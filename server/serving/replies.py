"""What a reply may weigh: the server's send limit, told to the caller before work is wasted."""

from __future__ import annotations

from bertserve.errors import InvalidRequest

__all__ = ["check_reply_size"]


def check_reply_size(size: int, limit: int, inputs: int, or_else: str = "") -> None:
    """Refuse a call whose reply would not fit the send limit, with how many inputs would; before
    the model runs where the size is known by then."""
    if size > limit:
        fit = max(1, inputs * limit // size)
        raise InvalidRequest(
            f"the reply would hold about {size} bytes, over the server's limit of {limit} bytes per reply "
            f"(max_send_message_bytes); send at most {fit} inputs per call{or_else}"
        )
