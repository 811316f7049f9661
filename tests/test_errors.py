"""Bad input gets a clear error with the right status code, and the server keeps serving."""

from __future__ import annotations

import grpc
import pytest

from bertserve_client import AsyncClient, BertserveError


async def _error(call: object) -> BertserveError:
    with pytest.raises(BertserveError) as info:
        await call  # type: ignore[misc]
    return info.value


async def test_unknown_model_is_not_found(client: AsyncClient) -> None:
    err = await _error(client.embed("hello", model="no-such-model"))
    assert err.code is grpc.StatusCode.NOT_FOUND
    assert "no model named 'no-such-model'" in err.message
    assert "minilm" in err.message  # names what is configured
    err = await _error(client.model("no-such-model"))
    assert err.code is grpc.StatusCode.NOT_FOUND


async def test_empty_batch_is_invalid(client: AsyncClient) -> None:
    err = await _error(client.embed([], model="bert"))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == "inputs is empty: send at least one text"
    err = await _error(client.tokenize([], model="bert"))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT


async def test_empty_string_is_invalid_with_its_index(client: AsyncClient) -> None:
    err = await _error(client.embed(["fine", "also fine", "  "], model="bert"))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == "input 2 is empty"


async def test_over_long_input_without_truncate_names_index_count_and_limit(client: AsyncClient) -> None:
    info = await client.model("roberta")
    [tokens] = await client.tokenize("word " * 300, model="roberta")
    err = await _error(client.embed(["ok", "word " * 300], model="roberta"))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.message.startswith(
        f"input 1 has {len(tokens.ids)} tokens, over the limit of {info.max_input_tokens} tokens of model 'roberta'"
    )


async def test_pairs_must_match_inputs(client: AsyncClient) -> None:
    err = await _error(client.tokenize(["a", "b"], pairs=["only one"], model="bert"))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == "pairs has 1 entries for 2 inputs: send none or one per input"


async def test_pooler_on_electra_is_unimplemented(client: AsyncClient) -> None:
    info = await client.model("electra")
    assert "pooler" not in info.poolings
    err = await _error(client.embed("hello", model="electra", pooling="pooler"))
    assert err.code is grpc.StatusCode.UNIMPLEMENTED
    assert err.message == "model 'electra' does not offer pooler pooling (it has no pooler head); it offers cls, mean"


async def test_answer_without_qa_head_is_unimplemented(client: AsyncClient) -> None:
    err = await _error(client.answer(("What?", "Something."), model="bert"))
    assert err.code is grpc.StatusCode.UNIMPLEMENTED
    assert err.message.startswith("model 'bert' has no question-answering head")


async def test_failed_model_is_unavailable_while_others_serve(client: AsyncClient) -> None:
    err = await _error(client.embed("hello", model="missing"))
    assert err.code is grpc.StatusCode.UNAVAILABLE
    assert err.message.startswith("model 'missing' failed to load: ")
    err = await _error(client.embed("hello", model="wrong-plugin"))
    assert err.code is grpc.StatusCode.UNAVAILABLE
    assert "is a 'bert' model; plugin 'albert' serves ['albert']" in err.message
    result = await client.embed("still serving", model="bert")
    assert result.embeddings.shape[0] == 1
