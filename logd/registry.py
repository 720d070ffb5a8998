"""Component type names -> their modules, imported only when a config names them.

Optional dependencies (a database driver, say) then cost nothing until used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    module: str
    config: str
    component: str

    def config_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.config)

    def component_class(self) -> type:
        return getattr(importlib.import_module(self.module), self.component)


LISTENERS: dict[str, Kind] = {
    "tcp": Kind("logd.listeners.tcp", "TcpListenerConfig", "TcpListener"),
    "http": Kind("logd.listeners.http", "HttpListenerConfig", "HttpListener"),
    "analyzer": Kind("logd.outputs.analyzer_pool", "AnalyzerListenerConfig", "AnalyzerPool"),
    "kafka": Kind("logd.listeners.kafka", "KafkaListenerConfig", "KafkaListener"),
    "syslog": Kind("logd.listeners.syslog", "SyslogListenerConfig", "syslog_listener"),
    "tail": Kind("logd.listeners.tail", "TailListenerConfig", "TailListener"),
}

OUTPUTS: dict[str, Kind] = {
    "file": Kind("logd.outputs.file", "FileOutputConfig", "FileOutput"),
    "clickhouse": Kind("logd.outputs.clickhouse", "ClickHouseOutputConfig", "ClickHouseOutput"),
    "kafka": Kind("logd.outputs.kafka", "KafkaOutputConfig", "KafkaOutput"),
    "postgres": Kind("logd.outputs.postgres", "PostgresOutputConfig", "PostgresOutput"),
}
