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


class BadRequestBytes(Exception):
    """Request bytes that do not parse as the method's request message."""


def _parse(message_class: type[Message], raw: bytes) -> Message:
    try:
        return message_class.FromString(raw)
    except DecodeError:
        raise BadRequestBytes(f"the request ({len(raw)} bytes) is not a valid "
                              f"{message_class.DESCRIPTOR.name}") from None


def _unary_request(method, message_class):
    async def handle(raw: bytes, context: grpc.aio.ServicerContext):
        try:
            request = _parse(message_class, raw)
        except BadRequestBytes as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return await method(request, context)

    async def handle_stream(raw: bytes, context: grpc.aio.ServicerContext):
        try:
            request = _parse(message_class, raw)
        except BadRequestBytes as error:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        async for response in method(request, context):
            yield response
    return handle, handle_stream


def _stream_request(method, message_class):
    async def handle(raw_requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext):
        async def requests():
            async for raw in raw_requests:
                try:
                    yield _parse(message_class, raw)
                except BadRequestBytes as error:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
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
