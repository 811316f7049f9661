"""Python client of bertserve, the gRPC server for BERT-family encoders.

    from bertserve_client import Client

    with Client("localhost:50051") as client:
        result = client.embed(["first text", "second text"], pooling="mean", normalize=True)
        result.embeddings          # numpy float32, shape [2, hidden_size]
        client.answer(("Where is the tower?", "The tower is in Paris."))[0][0].text

`AsyncClient` takes the same arguments and its methods are awaited. Against a server with TLS
pass `credentials=tls_credentials(ca_file, cert_file, key_file)`; with token auth, `token=`
(or set `BERTSERVE_TOKEN`). `load_model`, `unload_model` and `reload_model` change the
server's models while it runs (admin scope). Failed calls raise
`BertserveError` (with `.code`, `.message` and `.retry_after_s`). The generated stubs of the
contract are in `bertserve_client.v1`.
"""

from bertserve_client._client import AsyncClient, Client, tls_credentials
from bertserve_client._errors import BertserveError
from bertserve_client._types import (
    Answer,
    Answers,
    Batch,
    Classifications,
    EmbedResult,
    Entities,
    Entity,
    FillMaskResults,
    LabelScore,
    MaskCandidate,
    ModelInfo,
    RankedDocument,
    ReplacedTokens,
    ReplacedTokensResults,
    RerankResult,
    Similarities,
    Tokenization,
    TokenProbability,
    Unloaded,
    Usage,
)

__all__ = [
    "Answer",
    "Answers",
    "AsyncClient",
    "Batch",
    "BertserveError",
    "Classifications",
    "Client",
    "EmbedResult",
    "Entities",
    "Entity",
    "FillMaskResults",
    "LabelScore",
    "MaskCandidate",
    "ModelInfo",
    "RankedDocument",
    "ReplacedTokens",
    "ReplacedTokensResults",
    "RerankResult",
    "Similarities",
    "TokenProbability",
    "Tokenization",
    "Unloaded",
    "Usage",
    "tls_credentials",
]
