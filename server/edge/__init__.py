"""The gRPC edge: the server's assembly, the servicers, protobuf conversion, status codes and
request parsing. Everything here speaks protobuf and gRPC; nothing below it does."""
