"""gRPC servicers: the only controller code that speaks protobuf (with convert)."""
