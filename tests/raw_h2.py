"""A gRPC call made by hand over HTTP/2 (the h2 library), for what gRPC's own clients refuse to
send: header values that are not printable ASCII, as a hostile or broken client may send them."""

from __future__ import annotations

import socket
import struct

import h2.config
import h2.connection
import h2.events


def unary_call(
    host: str, port: int, method: str, message: bytes, metadata: list[tuple[bytes, bytes]], timeout: float = 30
) -> dict[bytes, bytes]:
    """Send one unary call (method: /package.Service/Rpc) and return its response trailers
    (grpc-status, grpc-message, ...), with the headers merged in."""
    config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
    connection = h2.connection.H2Connection(config=config)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        headers = [
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", method.encode()),
            (b":authority", f"{host}:{port}".encode()),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
            *metadata,
        ]
        connection.send_headers(stream, headers)
        connection.send_data(stream, struct.pack(">BI", 0, len(message)) + message, end_stream=True)
        sock.sendall(connection.data_to_send())
        received: dict[bytes, bytes] = {}
        while True:
            data = sock.recv(65536)
            if not data:
                return received
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    received.update(dict(event.headers))
                if isinstance(event, h2.events.DataReceived):
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return received
            sock.sendall(connection.data_to_send())
