"""bertserve: a production gRPC server for BERT-family encoders.

Embeddings, tokenization and extractive question answering over one protobuf contract
(``bertserve.v1``), with one plugin per BERT variant discovered through entry points.
"""

__version__ = "0.1.0"
