from django.apps import AppConfig


class ConnectionsConfig(AppConfig):
    name = "connections"

    def ready(self) -> None:
        # The pipeline (a lower layer) sends node-to-node messages through this app's transport.
        from connections.transport import HttpTransport
        from replicas.transport import register_remote_transport

        register_remote_transport(HttpTransport)
