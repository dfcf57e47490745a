"""Generated protobuf and gRPC code for the agents' wire interface.

Everything here except this file is written by `make protos` from
protos/monitoring.proto; never edit the generated modules by hand.
"""

from poller.proto import monitoring_pb2, monitoring_pb2_grpc

__all__ = ["monitoring_pb2", "monitoring_pb2_grpc"]
