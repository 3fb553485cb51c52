"""The ExplainerService's method handlers, with the request bytes parsed by us.

grpc-python answers UNKNOWN when a request deserializer raises, so bytes that are not a valid
message would get a status no client can act on. Here each handler receives the raw bytes and
parses them itself: garbage ends the call with INVALID_ARGUMENT naming the message type.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from explainserve_client._proto import explainer_pb2 as pb
from google.protobuf.message import DecodeError, Message

SERVICE = pb.DESCRIPTOR.services_by_name["ExplainerService"]


async def _parse(message_class: type[Message], raw: bytes,
                 context: grpc.aio.ServicerContext) -> Message:
    """The request message, or the call ends INVALID_ARGUMENT naming the message type."""
    try:
        return message_class.FromString(raw)
    except DecodeError:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                            f"the request ({len(raw)} bytes) is not a valid "
                            f"{message_class.DESCRIPTOR.name}")


def _unary_request(method, message_class):
    async def handle(raw: bytes, context: grpc.aio.ServicerContext):
        return await method(await _parse(message_class, raw, context), context)

    async def handle_stream(raw: bytes, context: grpc.aio.ServicerContext):
        async for response in method(await _parse(message_class, raw, context), context):
            yield response
    return handle, handle_stream


def _stream_request(method, message_class):
    async def handle(raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext):
        async def requests():
            async for raw in raw_requests:
                yield await _parse(message_class, raw, context)
        async for response in method(requests(), context):
            yield response
    return handle


def explainer_handler(servicer) -> grpc.GenericRpcHandler:
    """A generic handler for every method of the service, built from the proto descriptor."""
    handlers = {}
    for descriptor in SERVICE.methods:
        method = getattr(servicer, descriptor.name)
        request_class = getattr(pb, descriptor.input_type.name)
        serializer = getattr(pb, descriptor.output_type.name).SerializeToString
        if descriptor.client_streaming:
            if not descriptor.server_streaming:
                raise NotImplementedError(f"{descriptor.name}: client-streaming unary responses")
            handlers[descriptor.name] = grpc.stream_stream_rpc_method_handler(
                _stream_request(method, request_class), response_serializer=serializer)
            continue
        unary, streaming = _unary_request(method, request_class)
        factory = (grpc.unary_stream_rpc_method_handler if descriptor.server_streaming
                   else grpc.unary_unary_rpc_method_handler)
        handlers[descriptor.name] = factory(streaming if descriptor.server_streaming else unary,
                                            response_serializer=serializer)
    return grpc.method_handlers_generic_handler(SERVICE.full_name, handlers)
