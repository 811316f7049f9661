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


async def test_over_long_input_without_truncate_names_index_and_limit(client: AsyncClient) -> None:
    """The count is not given: a long input is tokenized only as far as it takes to show it too long."""
    info = await client.model("roberta")
    err = await _error(client.embed(["ok", "word " * 300], model="roberta"))
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    limit = info.max_input_tokens
    assert err.message == f"input 1 has more than {limit} tokens, the limit of model 'roberta'; shorten it or set " + (
        "truncate"
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
    assert err.message == (
        "model 'bert' cannot serve Answer: that needs a question-answering head (a checkpoint fine-tuned for QA); "
        "it serves Tokenize, Embed, Similarity"
    )


async def test_failed_model_is_a_failed_precondition_while_others_serve(client: AsyncClient) -> None:
    """A model that failed to load answers FAILED_PRECONDITION: a retry cannot succeed, unlike UNAVAILABLE."""
    err = await _error(client.embed("hello", model="missing"))
    assert err.code is grpc.StatusCode.FAILED_PRECONDITION
    assert err.message.startswith("model 'missing' failed to load: ")
    err = await _error(client.embed("hello", model="wrong-plugin"))
    assert err.code is grpc.StatusCode.FAILED_PRECONDITION
    assert "is a 'bert' model; plugin 'albert' serves ['albert']" in err.message
    result = await client.embed("still serving", model="bert")
    assert result.embeddings.shape[0] == 1


async def test_a_huge_model_name_is_cut_in_the_message(client: AsyncClient) -> None:
    """A 100 KB name quoted in full would overflow the status metadata and turn NOT_FOUND into RESOURCE_EXHAUSTED."""
    err = await _error(client.embed("hello", model="m" * 100_000))
    assert err.code is grpc.StatusCode.NOT_FOUND
    assert err.message.startswith(f"no model named {'m' * 64!r}... (100000 characters); models: [")
    assert len(err.message) < 2000


# Embed's field 1 (model, a string) holding bytes that are not UTF-8.
NOT_UTF8 = b"\x0a\x02\xff\xfe"


async def test_a_request_that_does_not_parse_is_invalid_argument(
    channel: grpc.aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    embed = channel.unary_unary("/bertserve.v1.EncoderService/Embed")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await embed(NOT_UTF8, timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("the request does not parse as bertserve.v1.EmbedRequest: ")
    assert not [r for r in caplog.records if r.levelno >= 40], "a request that does not parse is no server error"
    models = channel.unary_unary("/bertserve.v1.ModelService/GetModel")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await models(NOT_UTF8, timeout=10)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("the request does not parse as bertserve.v1.GetModelRequest: ")


async def test_a_stream_item_that_does_not_parse_fails_alone(channel: grpc.aio.Channel) -> None:
    from bertserve_client.v1 import encoder_service_pb2

    good = encoder_service_pb2.EmbedStreamRequest(
        request=encoder_service_pb2.EmbedRequest(model="bert", inputs=["hello"])
    ).SerializeToString()
    bad = b"\x0a" + bytes([len(NOT_UTF8)]) + NOT_UTF8  # field 1 (request) holding the broken EmbedRequest
    stream = channel.stream_stream(
        "/bertserve.v1.EncoderService/EmbedStream",
        response_deserializer=encoder_service_pb2.EmbedStreamResponse.FromString,
    )
    replies = [r async for r in stream(iter([good, bad, good]), timeout=30)]
    assert [r.WhichOneof("result") for r in replies] == ["response", "error", "response"]
    assert replies[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert replies[1].error.message.startswith("the request does not parse as bertserve.v1.EmbedStreamRequest: ")
