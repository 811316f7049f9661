"""Offsets and answer spans in the unit a caller's language indexes strings by: code points
(Python), UTF-16 code units (JavaScript, Java, C#) or UTF-8 bytes (Go, Rust). Each unit's
offsets slice the original text, in that unit's terms, to the same pieces."""

from __future__ import annotations

import grpc
import pytest

from bertserve_client import AsyncClient, BertserveError
from bertserve_client.v1 import encoder_service_pb2, encoder_service_pb2_grpc

TEXT = "Zoë met 👩🏽‍🚀 in Zürich; 𝔘nicode and 日本語 too."  # noqa: RUF001 - a character outside the BMP on purpose
PAIR = "Çava? 🎉 Oui."


def utf16_slice(text: str, start: int, end: int) -> str:
    return text.encode("utf-16-le")[2 * start : 2 * end].decode("utf-16-le")


def utf8_slice(text: str, start: int, end: int) -> str:
    return text.encode()[start:end].decode()


@pytest.mark.parametrize("model", ["minilm", "roberta", "albert"])
async def test_each_unit_slices_the_same_pieces(client: AsyncClient, model: str) -> None:
    by_point = await client.tokenize([TEXT], pairs=[PAIR], model=model)
    by_utf16 = await client.tokenize([TEXT], pairs=[PAIR], model=model, offset_unit="utf16")
    by_utf8 = await client.tokenize([TEXT], pairs=[PAIR], model=model, offset_unit="utf8")
    [points], [units], [octets] = by_point, by_utf16, by_utf8
    assert points.ids == units.ids == octets.ids
    non_ascii = 0
    for segment, (s, e), (s16, e16), (s8, e8) in zip(
        points.sequence_ids, points.offsets, units.offsets, octets.offsets, strict=True
    ):
        if segment < 0:
            assert (s, e) == (s16, e16) == (s8, e8) == (0, 0)
            continue
        text = TEXT if segment == 0 else PAIR
        piece = text[s:e]
        assert utf16_slice(text, s16, e16) == piece
        assert utf8_slice(text, s8, e8) == piece
        non_ascii += not piece.isascii()
    assert non_ascii >= 3, "the text's emoji and accents are covered"


async def test_answer_spans_in_each_unit(client: AsyncClient) -> None:
    context = "🚀 Launches: the rocket Ünity flew from Cañaveral 🌍 to the Moon in 1969."
    question = ("Where did it fly to?", context)
    [points] = await client.answer(question, model="spanbert-qa", top_k=5)
    [units] = await client.answer(question, model="spanbert-qa", top_k=5, offset_unit="utf16")
    [octets] = await client.answer(question, model="spanbert-qa", top_k=5, offset_unit="utf8")
    assert [a.text for a in points] == [a.text for a in units] == [a.text for a in octets]
    for p, u, o in zip(points, units, octets, strict=True):
        piece = context[p.start : p.end]
        assert piece == utf16_slice(context, u.start, u.end) == utf8_slice(context, o.start, o.end)
        assert p.text == context[p.start : p.end]
    assert any(p.start != u.start or u.start != o.start for p, u, o in zip(points, units, octets, strict=True))


async def test_an_unknown_unit_is_refused(channel: grpc.aio.Channel) -> None:
    stub = encoder_service_pb2_grpc.EncoderServiceStub(channel)
    request = encoder_service_pb2.TokenizeRequest(model="minilm", inputs=["x"])
    request.offset_unit = 9  # type: ignore[assignment]  # a value no OffsetUnit has, as a newer client might send
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Tokenize(request)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "offset_unit 9 is not a known OffsetUnit value"


async def test_the_client_names_the_units(client: AsyncClient) -> None:
    with pytest.raises(ValueError, match=r"offset_unit must be one of \['code_point', 'utf16', 'utf8'\], not 'bytes'"):
        await client.tokenize("x", offset_unit="bytes")  # type: ignore[arg-type]
    with pytest.raises(BertserveError) as info:  # a known unit reaches the server
        await client.tokenize("x", model="no-such-model", offset_unit="utf8")
    assert info.value.code is grpc.StatusCode.NOT_FOUND
