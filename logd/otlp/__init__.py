"""OpenTelemetry logs (OTLP/HTTP): requests decoded into logd's records, and the answers.

`records` maps an ExportLogsServiceRequest (protobuf or OTLP/JSON) to JSON-object records
with their severities; `answers` encodes ExportLogsServiceResponse and google.rpc.Status
bodies in the request's encoding. Neither does I/O; the HTTP listener drives them.
"""
