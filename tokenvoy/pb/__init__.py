"""Generated protobuf and gRPC modules for the subset of Envoy's API that tokenvoy speaks.

DO NOT EDIT anything under this package: it is generated from ``proto/`` by ``python proto/generate.py``.
Modules mirror Envoy's proto paths under ``tokenvoy.pb`` (for example
``tokenvoy.pb.envoy.service.ext_proc.v3.external_processor_pb2``). ``python proto/generate.py --check``
(run by ``tests/test_proto_generated_fresh.py``) fails when this tree is stale. See ``proto/README.md``.
"""
