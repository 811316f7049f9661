"""The serving core: the router, one host per model, its batcher and pass planning, and the flows
of Embed, Tokenize and Answer. It speaks the domain types of bertserve.domain, not protobuf."""
